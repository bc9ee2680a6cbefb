package store

import (
	"sync"
	"sync/atomic"
)

// UpdateFor is Update for a transaction whose home is user home: the user
// whose partition it commits in (docs/cluster.md §9.1, §11.1). The command
// layer names it (command.Service.Home says which it is for each command);
// writes the transaction makes for users of other partitions will become
// intents, executed by those partitions' writers.
//
// With one partition (single mode, and cluster mode with P = 1) all homes
// share the one writer and UpdateFor is Update. With partitions
// (OpenPartitions) it runs fn in the writer of home's partition, and fails
// with ErrNotOwner on a node that does not own it.
func (s *Store) UpdateFor(home string, fn func(*Tx) error) error {
	if t := homeTracers.Load(); t != nil {
		if f := (*t)[s]; f != nil {
			f(home)
		}
	}
	return s.part(home).Update(fn)
}

// homeTracers are the TraceHomes callbacks by store; nil (one atomic load
// on the send path) when none is set.
var (
	homeTracers  atomic.Pointer[map[*Store]func(string)]
	homeTracerMu sync.Mutex
)

// TraceHomes calls fn with the home of every UpdateFor on s, before the
// transaction runs, until stop is called. It is for tests that hold the
// homes the command layer passes to what command.Service.Home answers.
func TraceHomes(s *Store, fn func(home string)) (stop func()) {
	set := func(f func(string)) {
		homeTracerMu.Lock()
		defer homeTracerMu.Unlock()
		next := make(map[*Store]func(string))
		if cur := homeTracers.Load(); cur != nil {
			for k, v := range *cur {
				next[k] = v
			}
		}
		if f == nil {
			delete(next, s)
		} else {
			next[s] = f
		}
		if len(next) == 0 {
			homeTracers.Store(nil)
			return
		}
		homeTracers.Store(&next)
	}
	set(fn)
	return func() { set(nil) }
}
