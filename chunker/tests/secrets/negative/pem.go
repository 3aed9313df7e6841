package pemutil

import (
	"encoding/pem"
	"errors"
	"strings"
)

// The headers this package recognises; a key file must start with one of them.
const (
	privateKeyHeader = "-----BEGIN PRIVATE KEY-----"
	rsaKeyHeader     = "-----BEGIN RSA PRIVATE KEY-----"
	keyFooter        = "-----END PRIVATE KEY-----"
)

type Config struct {
	Password string `json:"password" yaml:"password"`
	APIKey   string `json:"api_key" yaml:"api_key"`
	Token    string `json:"token"`
}

func IsKey(text string) bool {
	return strings.HasPrefix(text, privateKeyHeader) || strings.HasPrefix(text, rsaKeyHeader)
}

func Decode(text string, password string) (*pem.Block, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block: expected " + privateKeyHeader)
	}
	return block, nil
}
