package push

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// Compact JWS (RFC 7515) signing for the two vendor token schemes: ES256
// for APNs provider tokens, RS256 for Google's JWT bearer grant (RFC 7523).

var b64 = base64.RawURLEncoding

func signingInput(header, claims any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(h) + "." + b64.EncodeToString(c), nil
}

// signES256 makes a JWT signed with ECDSA P-256 / SHA-256. The signature is
// r‖s, each left-padded to 32 bytes (RFC 7518 §3.4), not ASN.1.
func signES256(key *ecdsa.PrivateKey, header, claims any) (string, error) {
	in, err := signingInput(header, claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64.EncodeToString(sig), nil
}

// signRS256 makes a JWT signed with RSASSA-PKCS1-v1_5 / SHA-256.
func signRS256(key *rsa.PrivateKey, header, claims any) (string, error) {
	in, err := signingInput(header, claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return in + "." + b64.EncodeToString(sig), nil
}

// parsePrivateKey reads a PEM PKCS#8 key (what a .p8 file and a Google
// service account hold), also accepting SEC 1 and PKCS#1 encodings.
func parsePrivateKey(pemText []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(pemText)
	if blk == nil {
		return nil, errors.New("no PEM block in key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("key is neither PKCS#8, SEC 1 nor PKCS#1")
}
