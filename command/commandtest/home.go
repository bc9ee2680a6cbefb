// Package commandtest holds what tests of several packages share about
// the command layer: CheckHomes, which holds every registered command to
// its home rule (command.Service.Home).
package commandtest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// HomeCase is one request of CheckHomes: who sends what, and the home and
// write flag Home must answer for it.
type HomeCase struct {
	Name    string
	Caller  *command.Caller
	Command string
	Body    string // or Prep, which may write first (a message to recall)
	Prep    func(t *testing.T) string
	Home    string
	Write   bool
	// Code: the command refuses the request (0: it succeeds). A refused
	// request writes nothing, whatever its command.
	Code int
	// Internal: the command writes through a store method that runs its
	// own Store.Update (ImportAccounts, DeleteAccounts, Kick), so no
	// UpdateFor is seen.
	Internal bool
}

// CheckHomes runs cases in order on svc, whose store is st, and holds each
// to what Home answers: its home and write flag are the case's; a write
// commits (the store's transaction count moves) and every UpdateFor it
// makes names Home's user; a read, or a refused request, commits nothing.
// Every command in names must have a case: a command cannot be added
// without its home rule.
func CheckHomes(t *testing.T, svc *command.Service, st *store.Store, names []string, cases []HomeCase) {
	t.Helper()
	covered, registered := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		registered[n] = true
	}
	for _, tc := range cases {
		covered[tc.Command] = true
		if !registered[tc.Command] && tc.Code != command.CodeUnknownCommand {
			t.Errorf("case %q: %s is not among the registered commands", tc.Name, tc.Command)
		}
	}
	var missing []string
	for _, n := range names {
		if !covered[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("commands without a home case (give each its home rule): %s", strings.Join(missing, ", "))
	}
	var (
		mu    sync.Mutex
		homes []string
	)
	stop := store.TraceHomes(st, func(h string) {
		mu.Lock()
		homes = append(homes, h)
		mu.Unlock()
	})
	defer stop()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			body := tc.Body
			if tc.Prep != nil {
				body = tc.Prep(t)
			}
			home, write := svc.Home(tc.Caller, tc.Command, []byte(body))
			if home != tc.Home || write != tc.Write {
				t.Errorf("Home = %q, write %v; want %q, write %v", home, write, tc.Home, tc.Write)
			}
			mu.Lock()
			homes = nil
			mu.Unlock()
			txns := st.Metrics.Txns.Load()
			c := *tc.Caller
			r := svc.Exec(context.Background(), &c, tc.Command, []byte(body))
			switch {
			case tc.Code == 0 && r.Err != nil:
				t.Fatalf("refused: %v", r.Err)
			case tc.Code != 0 && (r.Err == nil || r.Err.Code != tc.Code):
				t.Fatalf("reply %+v, want refusal %d", r, tc.Code)
			}
			mu.Lock()
			seen := homes
			mu.Unlock()
			committed := st.Metrics.Txns.Load() > txns
			for _, h := range seen {
				if h != home {
					t.Errorf("UpdateFor(%q), but Home says %q", h, home)
				}
			}
			switch {
			case tc.Code != 0 || !write:
				if committed || len(seen) > 0 {
					t.Errorf("committed (UpdateFor %q), want no write", seen)
				}
			case !committed:
				t.Errorf("committed nothing; a case of a write must write")
			case len(seen) == 0 && !tc.Internal:
				t.Errorf("wrote without UpdateFor")
			}
		})
	}
}
