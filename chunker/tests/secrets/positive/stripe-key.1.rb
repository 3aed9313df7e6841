Stripe.api_key = "sk_test_OQTH3hIGIcjWmI56db51hByC"
