package tls

const testKey = `-----BEGIN EC PRIVATE KEY-----
qKm3ndm2VlpmTiIGE+OrykpjrPdK53smsNaFa5NQLUJsadQNJAxzHYdOPig1H8fU
jWGDfU6ZF+4xJdY6YdyH6EHu9IfSXckwIOk1w9iNG8o9QgiIi+hxG32ehS/21pHW
2KQOb00F/X5iW9dmFROL6+mFdI/J1/jlwYxmiwLYgV9q5iQGVcsSh62fRv1POExo
-----END EC PRIVATE KEY-----`

func Key() string { return testKey }
