package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDocLinks: every relative link in README.md and docs/*.md names a file that exists, and
// every #anchor in such a link (to the same page or another .md) names a heading of that page,
// as GitHub renders anchors. The manual is split across pages that link to each other's
// sections; a heading renamed or moved must not leave a link that lands nowhere.
func TestDocLinks(t *testing.T) {
	t.Parallel()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join(repoRoot, "README.md"))
	anchors := map[string]map[string]bool{}
	anchorsOf := func(page string) map[string]bool {
		page = filepath.Clean(page)
		if a, ok := anchors[page]; ok {
			return a
		}
		a := headingAnchors(readFile(t, page))
		anchors[page] = a
		return a
	}
	links := 0
	for _, page := range pages {
		for _, l := range markdownLinks(readFile(t, page)) {
			if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
				continue
			}
			links++
			path, anchor, _ := strings.Cut(l.target, "#")
			target := page
			if path != "" {
				target = filepath.Join(filepath.Dir(page), path)
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s:%d: link %q: %v", page, l.line, l.target, err)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				t.Errorf("%s:%d: link %q: an anchor into a file that is not Markdown", page, l.line, l.target)
				continue
			}
			if !anchorsOf(target)[anchor] {
				t.Errorf("%s:%d: link %q: %s has no heading with the anchor #%s", page, l.line, l.target, target, anchor)
			}
		}
	}
	if links < 20 {
		t.Errorf("%d relative links in README.md and docs/: the parser is missing them", links)
	}
}

// TestHeadingAnchors holds headingAnchors to GitHub's rules on the headings the manual uses.
func TestHeadingAnchors(t *testing.T) {
	t.Parallel()
	got := headingAnchors("# enrich\n## Operator's guide\n```sh\n# 1. not a heading\n```\n" +
		"### `enrich status --json`, keys\n## Upgrading\n### Upgrading\n")
	for _, want := range []string{"enrich", "operators-guide", "enrich-status---json-keys", "upgrading", "upgrading-1"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["1-not-a-heading"] {
		t.Errorf("a comment in a code block was taken for a heading: %v", got)
	}
}

type mdLink struct {
	line   int
	target string
}

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	slugDrop  = regexp.MustCompile(`[^\p{L}\p{N}\s_-]`)
)

// markdownLinks are the link targets of text outside fenced code blocks.
func markdownLinks(text string) []mdLink {
	var out []mdLink
	fenced := false
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			out = append(out, mdLink{line: i + 1, target: m[1]})
		}
	}
	return out
}

// headingAnchors are the anchors GitHub gives a page's headings: lower case, punctuation but
// hyphens and underscores dropped, spaces made hyphens, a repeated anchor suffixed -1, -2, ...
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		m := headingRE.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		slug := strings.ReplaceAll(slugDrop.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}
