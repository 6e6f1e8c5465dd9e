package avatars_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/enrich-dev/enrich/avatars"
)

// memSaver keeps images in memory, once per hash, and counts saves.
type memSaver struct {
	mu     sync.Mutex
	images map[string][]byte
	saves  int
}

func (m *memSaver) SaveAvatar(_ context.Context, sha, _ string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saves++
	if _, ok := m.images[sha]; !ok {
		m.images[sha] = data
	}
	return nil
}

var jpeg = append([]byte{0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F', 0}, make([]byte, 64)...)

// TestKeep: what is kept and what is refused, and why.
func TestKeep(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/v/a.jpg", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(jpeg)
	})
	mux.HandleFunc("/v/same-bytes.jpg", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(jpeg)
	})
	mux.HandleFunc("/v/big.jpg", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(append(append([]byte{}, jpeg...), make([]byte, 200)...))
	})
	mux.HandleFunc("/v/html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg") // lies: the bytes are a page
		_, _ = w.Write([]byte("<html><body>login</body></html>"))
	})
	mux.HandleFunc("/v/expired.jpg", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) })
	other := httptest.NewServer(mux)
	t.Cleanup(other.Close)
	mux.HandleFunc("/v/away.jpg", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/v/a.jpg", http.StatusFound) // to the same bytes on another origin
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	saver := &memSaver{images: map[string][]byte{}}
	k, err := avatars.New(avatars.Config{Hosts: []string{srv.URL}, MaxBytes: 128}, saver)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		link, refused string // refused: "" kept, else what the error says
	}{
		{srv.URL + "/v/a.jpg?oe=66041D5F", ""},
		{srv.URL + "/v/same-bytes.jpg", ""},
		{srv.URL + "/v/big.jpg", "max_bytes"},
		{srv.URL + "/v/html", "not an image"},
		{srv.URL + "/v/expired.jpg", "HTTP 403"},
		{srv.URL + "/v/away.jpg", "another host"},
		{other.URL + "/v/a.jpg", "not on a trusted host"},
		{"https://pps.whatsapp.net/v/a.jpg", "not on a trusted host"},
		{"::not a url", "not on a trusted host"},
	}
	var kept []string
	for _, tc := range tests {
		sha, err := k.Keep(context.Background(), tc.link)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("Keep(%s): %v", tc.link, err)
		case tc.refused == "":
			kept = append(kept, sha)
		case err == nil || !errors.Is(err, avatars.ErrRefused) || !strings.Contains(err.Error(), tc.refused):
			t.Errorf("Keep(%s) = %q, %v: want ErrRefused saying %q", tc.link, sha, err, tc.refused)
		case strings.Contains(err.Error(), "oe="):
			t.Errorf("Keep(%s): the error shows the link's signature: %v", tc.link, err)
		}
	}
	if len(kept) != 2 || kept[0] != kept[1] || len(saver.images) != 1 {
		t.Errorf("kept %v, %d images stored: want one image, the same hash for both links", kept, len(saver.images))
	}
}

// TestHosts: a host name takes its subdomains over https only; an origin is exact.
func TestHosts(t *testing.T) {
	t.Parallel()
	// Nothing listens on these: a trusted link fails to download, an untrusted one is refused
	// before any connection.
	k, err := avatars.New(avatars.Config{}, &memSaver{images: map[string][]byte{}})
	if err != nil {
		t.Fatal(err)
	}
	for link, trusted := range map[string]bool{
		"https://pps.whatsapp.net.invalid/x":    false,
		"http://pps.whatsapp.net/x":             false,
		"https://evil.example/pps.whatsapp.net": false,
		"https://notpps.whatsapp.net/x":         false,
	} {
		_, err := k.Keep(context.Background(), link)
		if got := err != nil && strings.Contains(err.Error(), "not on a trusted host"); got == trusted {
			t.Errorf("Keep(%s): %v; want trusted %v", link, err, trusted)
		}
	}
	if _, err := avatars.New(avatars.Config{Hosts: []string{"pps whatsapp"}}, &memSaver{}); err == nil {
		t.Error("a host with a space: no error")
	}
}

// TestKeepData: an image GetAvatar inlined (base64Avatar) is kept without a download, under the
// same limits: an image, at most max_bytes, valid base64.
func TestKeepData(t *testing.T) {
	t.Parallel()
	saver := &memSaver{images: map[string][]byte{}}
	k, err := avatars.New(avatars.Config{MaxBytes: 100}, saver)
	if err != nil {
		t.Fatal(err)
	}
	sha, err := k.KeepData(context.Background(), base64.StdEncoding.EncodeToString(jpeg))
	if err != nil || len(sha) != 64 || string(saver.images[sha]) != string(jpeg) {
		t.Fatalf("KeepData(jpeg) = %q, %v; saved %d images", sha, err, len(saver.images))
	}
	for name, b64 := range map[string]string{
		"not an image": base64.StdEncoding.EncodeToString([]byte("<html>hello</html>")),
		"too large":    base64.StdEncoding.EncodeToString(append(jpeg, make([]byte, 100)...)),
		"not base64":   "/9j/4AAQ!!",
	} {
		if _, err := k.KeepData(context.Background(), b64); !errors.Is(err, avatars.ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
	}
	if saver.saves != 1 {
		t.Errorf("%d saves, want 1", saver.saves)
	}
}
