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

// InlineAvatars is what an Avatars that can also keep an image GetAvatar inlined (base64Avatar)
// has: KeepData stores the base64 image and returns its SHA-256 in hex (package avatars).
type InlineAvatars interface {
	KeepData(ctx context.Context, b64 string) (string, error)
}

// keepAvatar keeps a done row's avatar, when the run keeps images: the image the answer inlined
// (base64Avatar), when the Avatars can keep it (no download needed), else the one behind its
// link. "" when it does not keep images, or the image could not be kept (logged: the row is
// answered either way).
func (r *Runner) keepAvatar(c *controller, av greenapi.Avatar) string {
	if r.cfg.Avatars == nil || !av.HasAvatar() {
		return ""
	}
	if inline, ok := r.cfg.Avatars.(InlineAvatars); ok && av.Base64Avatar != "" {
		sha, err := inline.KeepData(r.calls, av.Base64Avatar)
		if err == nil {
			return sha
		}
		r.log.Debug().Str("instance", c.id).Err(err).Msg("keeping an inlined avatar failed; trying its link")
	}
	if av.URLAvatar == "" {
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
