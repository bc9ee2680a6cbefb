package usersig

import (
	"testing"
	"time"
)

// FuzzVerify feeds Verify UserSigs mutated from valid ones (a CONNECT
// password and a REST usersig parameter are both attacker-chosen). Whatever
// the input, Verify answers without panicking, its error maps to one of the
// documented codes, and it never accepts a claim other than the one that was
// signed: no mutation may change who the sig names, for which app, or when
// it expires.
func FuzzVerify(f *testing.F) {
	const key, appid, user = "fuzz-key", uint64(1400000001), "alice"
	issued := time.Unix(1_700_000_000, 0)
	now := issued.Add(time.Hour)
	for _, expire := range []int64{86400, 180 * 86400} {
		sig, err := Gen(appid, key, user, expire, issued)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sig)
	}
	f.Add("")
	f.Add("eJyrVgrxCdYrSy1SslIyUqoFAC0gBb0_") // zlib of a JSON object missing every field
	known := map[int]bool{70001: true, 70002: true, 70003: true, 70009: true, 70013: true, 70014: true}
	f.Fuzz(func(t *testing.T, sig string) {
		s, err := Verify(sig, appid, key, user, now)
		if err != nil {
			if !known[Code(err)] {
				t.Fatalf("%q: error %v maps to an undocumented code %d", sig, err, Code(err))
			}
			return
		}
		if s.Identifier != user || s.SDKAppID != appid || s.Time != issued.Unix() ||
			(s.Expire != 86400 && s.Expire != 180*86400) || s.HasUserBuf {
			t.Fatalf("%q: accepted a claim that was never signed: %+v", sig, s)
		}
	})
}
