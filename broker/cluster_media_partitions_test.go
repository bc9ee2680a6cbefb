package broker_test

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// Media and archives with several partitions (docs/cluster.md §14.3,
// §14.4, §11.2 item 6): three nodes, P = 6, one shared S3. alice uploads
// an image on a node that does not own her partition (the commands run on
// her owner) and sends it to bob, whose partition another node owns; bob
// downloads it through the third node. An App admin's upload sent as
// carol (a third partition) is carried by carol's message only. Past the
// uploads' deadlines the cleaners (each partition's on its owner) keep
// both carried uploads and remove the uncommitted one and the committed
// ones nobody was sent. The hour's archive, made by one node across all
// partitions, holds each message once, and again after a late import in
// a partition that node does not own, whose mark its owner clears.
func TestClusterMediaPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const P = 6
	clock := &testClock{}
	// Whole messages of one hour: no send may cross its end.
	if now := time.Now(); now.Minute() >= 50 {
		clock.Advance(now.Truncate(time.Hour).Add(time.Hour + time.Minute).Sub(now))
	}
	nodes, logs := startMediaCluster(t, func(c *srvpkg.Config) {
		c.Cluster.Partitions, c.Cluster.RebalanceDelay = P, time.Second
		c.Clock = clock.Now
	})
	srvs := servers(nodes)
	clustertest.WaitServing(t, srvs)
	owner := clustertest.Owners(t, srvs, P)
	of := func(u string) int { return owner[cluster.Partition(u, P)] }

	// alice's and bob's partitions have different owners x and y; carol's
	// partition is neither the admin's nor 0, and is owned by another
	// node than partition 0's (the archiver's).
	const admin = "administrator"
	var alice, bob, carol string
	for i := 0; alice == "" || bob == "" || carol == ""; i++ {
		u := fmt.Sprint("user", i)
		switch p := cluster.Partition(u, P); {
		case alice == "":
			alice = u
		case bob == "" && of(u) != of(alice):
			bob = u
		case carol == "" && p != 0 && p != cluster.Partition(admin, P) && owner[p] != owner[0] &&
			p != cluster.Partition(alice, P) && p != cluster.Partition(bob, P):
			carol = u
		}
	}
	x, y := of(alice), of(bob)
	z := 3 - x - y
	nodes[x].users(alice)
	nodes[y].users(bob)
	nodes[of(carol)].users(carol)
	clustertest.Settle(t, srvs)

	da := nodes[y].connect(alice, connectOpts{v5: true}) // not alice's owner
	db := nodes[x].connect(bob, connectOpts{})
	da.syncComplete()
	db.syncComplete()

	// alice's image, uploaded through a node that does not own her data.
	data := smallPNG()
	el := da.uploadMedia("image", "image/png", data)
	img := el.str("UUID")
	content := map[string]any{"UUID": img, "ImageFormat": el["ImageFormat"], "ImageInfoArray": el["ImageInfoArray"]}
	var keys []string
	first := da.send(bob, 1, map[string]any{"MsgType": "TIMImageElem", "MsgContent": content})
	keys = append(keys, first.str("MsgKey"))
	hour := time.Unix(first.num("MsgTime"), 0).UTC().Truncate(time.Hour)
	if msg := db.nextMsg(); !strings.Contains(fmt.Sprint(msg["MsgBody"]), img) {
		t.Fatalf("bob got %v, want alice's image %s", msg, img)
	}
	orig := ""
	for _, info := range el["ImageInfoArray"].([]any) {
		if u := info.(map[string]any)["URL"].(string); strings.HasSuffix(u, "/orig") {
			orig = u
		}
	}
	// bob downloads through the third node (neither alice's device's nor
	// his partition's owner... nor alice's): the upload is in alice's
	// partition, the grant goes to bob's owner.
	if st, body := fetch(t, onNode(t, nodes[z], orig), bob); st != 200 || string(body) != string(data) {
		t.Fatalf("bob's download through node %d: %d, %d bytes (want 200, %d bytes)", z, st, len(body), len(data))
	}
	if st, _ := fetch(t, onNode(t, nodes[z], orig), carol); st != http.StatusForbidden {
		t.Fatalf("carol's download of alice's image: %d, want 403", st)
	}
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		for i, n := range nodes {
			if ok, err := n.store.Granted(img, bob); !ok || err != nil {
				return fmt.Errorf("node %d: no grant of %s to bob (%v)", i, img, err)
			}
		}
		return nil
	})
	keys = append(keys, db.send(alice, 2).str("MsgKey"))
	da.nextMsg()

	// The App admin's file, sent as carol to bob: its reference is with
	// carol's copy, in carol's partition, not the admin's.
	adminFile := func(n *testServer, name string) event {
		t.Helper()
		tk := event(restOn(n, "media/apply_upload", fmt.Sprintf(`{"Type":"file","Size":5,"ContentType":"text/plain","FileName":%q}`, name)))
		if tk.str("ActionStatus") != "OK" {
			t.Fatalf("admin's apply_upload: %v", tk)
		}
		putUpload(t, tk, []byte("notes"))
		f := event(restOn(n, "media/commit_upload", fmt.Sprintf(`{"UUID":%q}`, tk.str("UUID"))))
		if f.str("ActionStatus") != "OK" {
			t.Fatalf("admin's commit_upload: %v", f)
		}
		return f
	}
	file := adminFile(nodes[z], "sent.txt")
	body, _ := json.Marshal(map[string]any{"From_Account": carol, "To_Account": bob, "MsgRandom": 3, "MsgBody": []any{
		map[string]any{"MsgType": "TIMFileElem", "MsgContent": map[string]any{"UUID": file.str("UUID"), "Url": file.str("Url"), "FileSize": 5, "FileName": "sent.txt", "Download_Flag": 2}}}})
	rep := restOn(nodes[z], "openim/sendmsg", string(body))
	if rep["ErrorCode"] != 0.0 {
		t.Fatalf("admin's sendmsg as %s: %v", carol, rep)
	}
	keys = append(keys, rep["MsgKey"].(string))
	if m := db.nextMsg(); m.str("From_Account") != carol {
		t.Fatalf("bob got %v, want carol's file", m)
	}
	if st, body := fetch(t, onNode(t, nodes[x], file.str("Url")), bob); st != 200 || string(body) != "notes" {
		t.Fatalf("bob's download of the admin's file: %d %q", st, body)
	}

	// Later uploads (their looks fall due after the carried ones'): one
	// of alice's and one of the admin's committed and sent to nobody, one
	// of alice's never committed.
	clock.Advance(2 * time.Second)
	unsent := da.uploadMedia("image", "image/png", data).str("UUID")
	adminUnsent := adminFile(nodes[x], "unsent.txt").str("UUID")
	tk, _ := da.request("media/apply_upload", map[string]any{"Type": "file", "Size": 5, "ContentType": "text/plain", "FileName": "u.txt"})
	uncommitted := tk.str("UUID")
	if uncommitted == "" {
		t.Fatalf("apply_upload: %v", tk)
	}

	// Past every deadline, and past the hour's end: the cleaners and the
	// archiver do their work.
	clock.Advance(2 * time.Hour)
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		for i, n := range nodes {
			for _, id := range []string{uncommitted, unsent, adminUnsent} {
				if u, err := n.store.GetUpload(id); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("node %d still has upload %s: %+v, %v", i, id, u, err)
				}
			}
		}
		return nil
	})
	// The carried uploads were looked at first (earlier deadlines): kept.
	for i, n := range nodes {
		for _, id := range []string{img, file.str("UUID")} {
			if u, err := n.store.GetUpload(id); err != nil || !u.Committed || u.Removing {
				t.Fatalf("node %d: carried upload %s %+v, %v; want it kept", i, id, u, err)
			}
		}
	}
	if st, _ := fetch(t, onNode(t, nodes[y], orig), bob); st != 200 {
		t.Fatalf("bob's download of alice's image after the cleaners ran: %d", st)
	}
	if st, _ := fetch(t, onNode(t, nodes[z], file.str("Url")), bob); st != 200 {
		t.Fatalf("bob's download of the admin's file after the cleaners ran: %d", st)
	}

	// The hour's archive: every message once, read through any node.
	archive := func(n *testServer) (string, error) {
		rep := restOn(n, "open_msg_svc/get_history", fmt.Sprintf(`{"ChatType":"C2C","MsgTime":%q}`, hour.Format("2006010215")))
		files, _ := rep["File_List"].([]any)
		if rep["ErrorCode"] != 0.0 || len(files) != 1 {
			return "", fmt.Errorf("get_history: %v", rep)
		}
		resp, err := http.Get(files[0].(map[string]any)["URL"].(string))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return "", err
		}
		raw, err := io.ReadAll(zr)
		return string(raw), err
	}
	once := func(raw string, want []string, lines int) error {
		if n := strings.Count(raw, "\n"); n != lines {
			return fmt.Errorf("the archive has %d lines, want %d: %s", n, lines, raw)
		}
		for _, w := range want {
			if c := strings.Count(raw, w); c != 1 {
				return fmt.Errorf("the archive has %q %d times, want once: %s", w, c, raw)
			}
		}
		return nil
	}
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		raw, err := archive(nodes[z])
		if err != nil {
			return err
		}
		return once(raw, keys, len(keys))
	})

	// A late import into the archived hour, sent by carol: its mark is in
	// carol's partition, which the archiving node does not own.
	imp := fmt.Sprintf(`{"From_Account":%q,"To_Account":%q,"MsgRandom":9,"MsgTimeStamp":%d,"SyncFromOldSystem":2,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"late one"}}]}`,
		carol, bob, hour.Add(10*time.Minute).Unix())
	if rep := restOn(nodes[y], "openim/importmsg", imp); rep["ErrorCode"] != 0.0 {
		t.Fatalf("importmsg: %v", rep)
	}
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		raw, err := archive(nodes[x])
		if err != nil {
			return err
		}
		return once(raw, append(keys, "late one"), len(keys)+1)
	})
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		for i, n := range nodes {
			if marks, err := n.store.DirtyMarks(hour.Unix()); len(marks) != 0 || err != nil {
				return fmt.Errorf("node %d: the hour still has marks %q (%v)", i, marks, err)
			}
		}
		return nil
	})
	for i, l := range logs {
		if bad := l.Matching("media background task failed"); len(bad) > 0 {
			t.Errorf("node %d: %s", i, bad[0])
		}
	}
}
