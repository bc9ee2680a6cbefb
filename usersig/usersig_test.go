package usersig

import (
	"bytes"
	"compress/zlib"
	"errors"
	"testing"
	"time"
)

const sampleKey = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"

// The fixed vectors of reference §2.6.
func TestSignatureVectors(t *testing.T) {
	for _, tc := range []struct {
		appid   uint64
		id      string
		userbuf []byte
		t, exp  int64
		want    string
	}{
		{1400000000, "xiaojun", nil, 1600000000, 15552000, "1Z5PngDjGaufeSiPoBuxdHY7EK3JTdAjMP93S4KvV3M="},
		{1400000000, "xiaojun", []byte{5}, 1600000000, 15552000, "FTrOk2mwIVhIpSfAROhOQgoG3FlJDIgbjvERZN4is4o="},
		{1400000000, "administrator", nil, 1700000000, 86400, "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="},
		{88888888, "admin", nil, 1600000000, 3600, "65APxErVR5T5q/E80qH0DcOzuP7j0O0ZrXtBGa+mlYI="},
	} {
		if got := Signature(sampleKey, tc.id, tc.appid, tc.t, tc.exp, tc.userbuf); got != tc.want {
			t.Errorf("%s@%d: got %s want %s", tc.id, tc.appid, got, tc.want)
		}
	}
}

// Full sigs from the reference, made by other implementations (Python
// default zlib level, Python key order; compact JSON).
const (
	pythonSig  = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFEzNPXFmekgGwyjTAPy0l2y3BNL01KDMwPynUorUjwizV29jb1CUhyzfAMsjYNNvMvCjH1tlWoBGhAzGw__"
	compactSig = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwokpuZl5UInilOzEgoLMFCUrCyiAiKdWFGQWpSpZGZsZGEBESjJzgXxDIB8CoPoz04Emmpk6BlS4FoUFmYaYFuq7WhgUehi4JPtXlQaYZxn4G0QVRZQ4uSdq5*ZEetoq1QIAHSgvVA__"
)

func TestVerifyMatrix(t *testing.T) {
	fresh, err := Gen(1400000000, sampleKey, "alice", 3600, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		sig   string
		appid uint64
		key   string
		id    string
		now   int64
		want  error
		code  int
	}{
		{"python vector ok", pythonSig, 1400000000, sampleKey, "xiaojun", 1600000100, nil, 0},
		{"python vector expired", pythonSig, 1400000000, sampleKey, "xiaojun", 1600000000 + 15552001, ErrExpired, 70001},
		{"python vector wrong key", pythonSig, 1400000000, sampleKey + "x", "xiaojun", 1600000100, ErrSignature, 70009},
		{"compact vector ok", compactSig, 88888888, sampleKey, "admin", 1600000001, nil, 0},
		{"own sig ok", fresh, 1400000000, sampleKey, "alice", 1700000001, nil, 0},
		{"own sig last valid second", fresh, 1400000000, sampleKey, "alice", 1700003600, nil, 0},
		{"own sig expired", fresh, 1400000000, sampleKey, "alice", 1700003601, ErrExpired, 70001},
		{"another user's sig", fresh, 1400000000, sampleKey, "bob", 1700000001, ErrIdentifier, 70013},
		{"wrong sdkappid", fresh, 1400000001, sampleKey, "alice", 1700000001, ErrSDKAppID, 70014},
		{"empty", "", 1400000000, sampleKey, "alice", 1700000001, ErrEmpty, 70002},
		{"garbage", "not*a*sig", 1400000000, sampleKey, "alice", 1700000001, ErrMalformed, 70003},
		{"truncated", fresh[:len(fresh)/2], 1400000000, sampleKey, "alice", 1700000001, ErrMalformed, 70003},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.sig, tc.appid, tc.key, tc.id, time.Unix(tc.now, 0))
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("got %v want %v", err, tc.want)
			}
			if Code(err) != tc.code {
				t.Fatalf("code %d want %d", Code(err), tc.code)
			}
		})
	}
}

// A sig whose validity was stretched after signing must fail the HMAC.
func TestStretchedExpiryRefused(t *testing.T) {
	doc := `{"TLS.ver":"2.0","TLS.identifier":"alice","TLS.sdkappid":1400000000,"TLS.time":1700000000,"TLS.expire":999999,"TLS.sig":"` +
		Signature(sampleKey, "alice", 1400000000, 1700000000, 3600, nil) + `"}`
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write([]byte(doc))
	w.Close()
	_, err := Verify(encode(z.Bytes()), 1400000000, sampleKey, "alice", time.Unix(1700005000, 0))
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("stretched sig: %v", err)
	}
}
