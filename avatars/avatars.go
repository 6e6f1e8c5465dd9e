// Package avatars keeps the images behind avatar links, which expire (their oe parameter) days
// after GetAvatar hands them out. A Keeper fetches each link once, under strict limits (only
// from the hosts it is told to trust, no redirect elsewhere, a size cap, an image content type, a
// timeout, a bounded number of downloads at once), and stores the bytes once per content through
// a Saver (PostgreSQL's enrich_avatars table in production), keyed by their SHA-256: a default
// avatar shared by thousands of numbers is stored once.
package avatars

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of Config.
const (
	MaxBytesDefault    = 1 << 20
	TimeoutDefault     = 10 * time.Second
	SaveTimeoutDefault = 10 * time.Second
	ConcurrencyDefault = 4
)

// HostDefault is where Green API's avatar links point.
const HostDefault = "pps.whatsapp.net"

// Saver stores an image's bytes under their SHA-256, once: saving the same hash again is not an
// error and changes nothing.
type Saver interface {
	SaveAvatar(ctx context.Context, sha256Hex, contentType string, data []byte) error
}

// Config bounds what a Keeper fetches.
type Config struct {
	// Hosts are the hosts links may point at: "pps.whatsapp.net" also takes its subdomains, over
	// https only; an origin with a scheme ("http://127.0.0.1:7780") is taken exactly, for a
	// simulator. Default [HostDefault].
	Hosts []string
	// MaxBytes is the largest image kept; a larger one is refused. Default 1 MiB.
	MaxBytes int64
	// Timeout bounds one download, headers and body. Default 10s.
	Timeout time.Duration
	// Concurrency is how many downloads run at once. Default 4.
	Concurrency int
	// SaveTimeout bounds storing one image (the run's database.timeout): a lock on the images'
	// table must not hold a worker and a download slot until the run stops; the image is then
	// not kept and the row keeps its link. Default SaveTimeoutDefault.
	SaveTimeout time.Duration
	// Client is the HTTP client (its transport; its redirect policy is replaced). Default: a
	// client of its own.
	Client *http.Client
}

// Keeper downloads and stores avatars. It is safe for concurrent use.
type Keeper struct {
	cfg    Config
	client *http.Client
	saver  Saver
	slots  chan struct{}
}

// ErrRefused wraps every reason a link is not kept that is the link's (a host not trusted, not
// an image, too large, an HTTP error), as opposed to a failure to store it.
var ErrRefused = errors.New("avatar not kept")

// New checks cfg and returns a Keeper storing through s.
func New(cfg Config, s Saver) (*Keeper, error) {
	if s == nil {
		return nil, errors.New("avatars: nil Saver")
	}
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{HostDefault}
	}
	for _, h := range cfg.Hosts {
		if h == "" || strings.ContainsAny(h, " /") && !strings.Contains(h, "://") {
			return nil, fmt.Errorf("avatars.hosts: %q is neither a host name nor an origin like http://127.0.0.1:7780", h)
		}
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = MaxBytesDefault
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = TimeoutDefault
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = ConcurrencyDefault
	}
	if cfg.SaveTimeout == 0 {
		cfg.SaveTimeout = SaveTimeoutDefault
	}
	if cfg.MaxBytes < 0 || cfg.Timeout < 0 || cfg.Concurrency < 0 || cfg.SaveTimeout < 0 {
		return nil, fmt.Errorf("avatars: max_bytes, timeout, concurrency and the save timeout must not be negative")
	}
	base := cfg.Client
	if base == nil {
		base = &http.Client{}
	}
	client := *base
	client.Timeout = cfg.Timeout
	k := &Keeper{cfg: cfg, saver: s, slots: make(chan struct{}, cfg.Concurrency)}
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 3 {
			return fmt.Errorf("%w: more than 3 redirects", ErrRefused)
		}
		if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
			return fmt.Errorf("%w: redirected to another host (%s)", ErrRefused, req.URL.Host)
		}
		return nil
	}
	k.client = &client
	return k, nil
}

// Keep fetches the image at link and stores it, returning its SHA-256 in hex. It waits for a
// download slot first (ctx bounds the wait).
func (k *Keeper) Keep(ctx context.Context, link string) (string, error) {
	u, err := url.Parse(link)
	if err != nil || !k.trusted(u) {
		return "", fmt.Errorf("%w: %s is not on a trusted host (avatars.hosts)", ErrRefused, redacted(link))
	}
	select {
	case k.slots <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-k.slots }()
	data, contentType, err := k.fetch(ctx, u)
	if err != nil {
		return "", err
	}
	return k.save(ctx, contentType, data)
}

// KeepData stores an image GetAvatar inlined as base64Avatar, under the same limits as Keep's
// downloads (avatars.max_bytes, an image by its content), and returns its SHA-256 in hex. No
// download is made: the bytes came with the answer.
func (k *Keeper) KeepData(ctx context.Context, b64 string) (string, error) {
	if int64(base64.StdEncoding.DecodedLen(len(b64))) > k.cfg.MaxBytes+2 {
		return "", fmt.Errorf("%w: inlined avatar over avatars.max_bytes (%d)", ErrRefused, k.cfg.MaxBytes)
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return "", fmt.Errorf("%w: inlined avatar is not base64: %v", ErrRefused, err)
	}
	if int64(len(data)) > k.cfg.MaxBytes {
		return "", fmt.Errorf("%w: inlined avatar over avatars.max_bytes (%d)", ErrRefused, k.cfg.MaxBytes)
	}
	contentType := http.DetectContentType(data)
	if !strings.HasPrefix(contentType, "image/") {
		return "", fmt.Errorf("%w: inlined avatar is not an image (content looks like %q)", ErrRefused, contentType)
	}
	return k.save(ctx, contentType, data)
}

// save stores an image once by its SHA-256, within avatars' SaveTimeout (database.timeout: a
// lock must not hold a download slot), and returns the hash in hex.
func (k *Keeper) save(ctx context.Context, contentType string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	sctx, cancel := context.WithTimeout(ctx, k.cfg.SaveTimeout)
	defer cancel()
	if err := k.saver.SaveAvatar(sctx, hash, contentType, data); err != nil {
		return "", fmt.Errorf("save avatar %s (within %s): %w", hash[:12], k.cfg.SaveTimeout, err)
	}
	return hash, nil
}

// fetch downloads u within the limits and returns the body and its content type.
func (k *Keeper) fetch(ctx context.Context, u *url.URL) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrRefused, err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("download avatar from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("%w: %s answered HTTP %d (an expired link answers 403)", ErrRefused, u.Host, resp.StatusCode)
	}
	if resp.ContentLength > k.cfg.MaxBytes {
		return nil, "", fmt.Errorf("%w: %d bytes, over avatars.max_bytes (%d)", ErrRefused, resp.ContentLength, k.cfg.MaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, k.cfg.MaxBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("download avatar from %s: %w", u.Host, err)
	}
	if int64(len(data)) > k.cfg.MaxBytes {
		return nil, "", fmt.Errorf("%w: over avatars.max_bytes (%d)", ErrRefused, k.cfg.MaxBytes)
	}
	declared, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	sniffed := http.DetectContentType(data)
	if !strings.HasPrefix(declared, "image/") || !strings.HasPrefix(sniffed, "image/") {
		return nil, "", fmt.Errorf("%w: not an image (Content-Type %q, content looks like %q)", ErrRefused, declared, sniffed)
	}
	return data, declared, nil
}

// trusted says whether u is on one of the configured hosts.
func (k *Keeper) trusted(u *url.URL) bool {
	for _, h := range k.cfg.Hosts {
		if origin, ok := strings.CutSuffix(h, "/"); ok {
			h = origin
		}
		if strings.Contains(h, "://") {
			if u.Scheme+"://"+u.Host == h {
				return true
			}
			continue
		}
		host := u.Hostname()
		if u.Scheme == "https" && (host == h || strings.HasSuffix(host, "."+h)) {
			return true
		}
	}
	return false
}

// redacted is a link without its query (its signature) for messages.
func redacted(link string) string {
	if i := strings.IndexByte(link, '?'); i >= 0 {
		return link[:i]
	}
	return link
}
