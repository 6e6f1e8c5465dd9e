package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// TestKeepAvatars: with [avatars] download = true, every avatar answered is fetched from its
// link (the simulator serves them) and kept once per image: the rows name it by SHA-256, and
// enrich_avatars holds each distinct image once, byte for byte what was served.
func TestKeepAvatars(t *testing.T) {
	t.Parallel()
	inst := simulator.Instance{ID: "1101000071", Token: "tok-avatars", RPS: 100}
	b := seedProc(t, 150, "7903", inst, simulator.Config{Seed: 9, ImageVariety: 4})
	srv := httptest.NewServer(b.sim)
	t.Cleanup(srv.Close)
	b.sim.ServeImagesAt(srv.URL)
	b.config = filepath.Join(t.TempDir(), "enrich.toml")
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = 100\n\n[avatars]\ndownload = true\nhosts = [%q]\n",
		srv.URL, inst.ID, inst.Token, srv.URL)
	if err := os.WriteFile(b.config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := b.command(t, "run", "--log-format", "json")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	ctx := context.Background()
	var withLink, kept, distinct, stored int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE url_avatar <> ''), count(avatar_sha256), count(DISTINCT avatar_sha256),
		(SELECT count(*) FROM enrich_avatars) FROM contacts`).Scan(&withLink, &kept, &distinct, &stored); err != nil {
		t.Fatal(err)
	}
	if withLink < 20 || kept != withLink || distinct > 4 || stored != distinct {
		t.Fatalf("%d rows with a link, %d with a kept image, %d distinct, %d stored: want every link kept, at most 4 images, each stored once",
			withLink, kept, distinct, stored)
	}
	rows, err := b.pool.Query(ctx, `SELECT data, content_type, size FROM enrich_avatars`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var data []byte
		var ct string
		var size int
		if err := rows.Scan(&data, &ct, &size); err != nil {
			t.Fatal(err)
		}
		served := false
		for n := range 4 {
			served = served || bytes.Equal(data, simulator.Image(n))
		}
		if !served || ct != "image/jpeg" || size != len(data) {
			t.Errorf("stored image (%s, %d bytes) is not one the simulator served", ct, size)
		}
	}
	t.Logf("%d rows with a link, %d images kept once each", withLink, stored)
}
