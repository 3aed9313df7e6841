private static final String CLIENT_SECRET = "KgQ0wt1qVT4ds5QoJTvJtAfz1PrPwgqfJHFg3Tfa";
