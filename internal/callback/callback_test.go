package callback_test

import (
	"testing"

	"github.com/duet-im/duet/internal/callback"
)

func TestSignExample(t *testing.T) {
	// §8.1's example.
	if got := callback.Sign("xxxxyyyy", 1669872112); got != "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061" {
		t.Fatalf("Sign = %s", got)
	}
}
