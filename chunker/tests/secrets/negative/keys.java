package com.example.auth;

public final class Keys {
    /** Name of the environment variable that holds the signing secret. */
    public static final String SECRET_ENV = "APP_SIGNING_SECRET";
    public static final String PASSWORD_PARAM = "password";
    private static final int TOKEN_LENGTH = 32;

    public static String secretFromEnv() {
        String secret = System.getenv(SECRET_ENV);
        if (secret == null) {
            throw new IllegalStateException("set " + SECRET_ENV + " (see docs/secrets.md)");
        }
        return secret;
    }

    public boolean checkPassword(char[] password, byte[] storedHash) {
        return PasswordHasher.verify(password, storedHash);
    }
}
