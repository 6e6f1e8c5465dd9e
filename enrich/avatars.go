package enrich

import (
	"context"

	"github.com/enrich-dev/enrich/greenapi"
)

// Avatars keeps avatar images (package avatars): Keep fetches the image at a link and stores it,
// returning its SHA-256 in hex.
type Avatars interface {
	Keep(ctx context.Context, link string) (string, error)
}

// keepAvatar keeps the image behind a done row's link, when the run keeps images; "" when it
// does not, or the image could not be kept (logged: the row is answered either way).
func (r *Runner) keepAvatar(c *controller, av greenapi.Avatar) string {
	if r.cfg.Avatars == nil || av.URLAvatar == "" {
		return ""
	}
	start := r.cfg.Now()
	sha, err := r.cfg.Avatars.Keep(r.calls, av.URLAvatar)
	r.cfg.Observer.Call(c.id, "downloadAvatar", downloadOutcome(err), r.cfg.Now().Sub(start))
	if err != nil {
		r.log.Debug().Str("instance", c.id).Err(err).Msg("keeping an avatar failed; the row keeps its link")
		return ""
	}
	return sha
}

// downloadOutcome names a download's outcome for the Observer.
func downloadOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	return "failed"
}
