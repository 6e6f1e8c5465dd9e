package simulator

import (
	"encoding/binary"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
)

// imagePath begins the path of every avatar link, as on pps.whatsapp.net.
const imagePath = "/v/"

// ImageVarietyDefault is how many different images the simulator serves when Config.ImageVariety
// is 0: few enough that a run over a few hundred numbers meets the same image many times, as
// real data does (default avatars, one photo on many business numbers).
const ImageVarietyDefault = 8

// ServeImagesAt makes avatar links point at base (the simulator's own URL, e.g. an
// httptest.Server's), where GET serves their images: a client that keeps avatars can be tested
// against it. It must be called before the links are handed out (before the first request).
func (s *Simulator) ServeImagesAt(base string) {
	base = strings.TrimSuffix(base, "/")
	s.imageHost.Store(&base)
}

// serveImage answers GET on an avatar link: a small JPEG chosen by the link's path among
// ImageVariety images, so different numbers share images. A link past its oe is refused with 403,
// as the CDN refuses an expired signature.
func (s *Simulator) serveImage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed)
		return
	}
	if oe, err := strconv.ParseInt(r.URL.Query().Get("oe"), 16, 64); err != nil || s.cfg.Now().Unix() > oe {
		writeStatus(w, http.StatusForbidden)
		return
	}
	h := fnv.New64a()
	h.Write([]byte(r.URL.Path))
	variety := s.cfg.ImageVariety
	if variety <= 0 {
		variety = ImageVarietyDefault
	}
	img := Image(int(h.Sum64() % uint64(variety)))
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Length", strconv.Itoa(len(img)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(img)
}

// Image is the n-th of the images the simulator serves: a JPEG's markers around bytes of its own.
func Image(n int) []byte {
	img := make([]byte, 0, 64)
	img = append(img, 0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00)
	var b [8]byte
	for i := range 4 {
		binary.BigEndian.PutUint64(b[:], mix64(uint64(n)*4+uint64(i)+1))
		img = append(img, b[:]...)
	}
	return append(img, 0xff, 0xd9)
}
