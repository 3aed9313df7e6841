DATABASES = {"default": {"USER": "app", "PASSWORD": "cIa2UybROfdS16"}}
