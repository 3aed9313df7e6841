KEY = """-----BEGIN PRIVATE KEY-----
+CKKUOGfjin5suINjiuB0BVmm2urmHh6m2KKB6S5Ffcx+cmpQlvwXN2wYqxPHUA8
VV1fgpLPw4AtB2HS224IhAY4rG0LYzTFmxrAjDgtE7JGCW5Gf1iao7kNg3VeNVZI
dHmy9dt7PfT9KnbsjF0uMMS/OOmbAfJE6sXNVy09ywKACj+eHftc/4uAJwbtUuHJ
q9RHox46yIaAen2gWkOv8nHkvSlySp3fC0dU8dyDo7JxtMo2u0iFQQeuALEGIY7i
RGsjPTNvePoPj5GfuOvv9kLCCmpulhfmZ8oylI5Y+l6jvGKQKQSwtSfnB8wJ5RLp
aogzyu1hyhm1WjBPRe/LsK+KfZ+cHzaImbOtZJQ+EmhbUhWvVSSvF7hPT7Iuwq2o
-----END PRIVATE KEY-----"""

def sign(data):
    return KEY
