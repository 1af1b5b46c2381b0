package template

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

//go:embed catalog/*.yaml
var catalogFS embed.FS

// Catalog is a set of templates by name.
type Catalog struct {
	byName map[string]*Template
}

// Builtin returns the catalog embedded in the binary; version fills
// ${shoal.version} in its templates (the reference workload's image tag).
func Builtin(version string) (*Catalog, error) {
	files, err := fs.Glob(catalogFS, "catalog/*.yaml")
	if err != nil {
		return nil, err
	}
	c := &Catalog{byName: map[string]*Template{}}
	for _, f := range files {
		data, err := catalogFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		t, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("built-in %s: %w", f, err)
		}
		t.Version = version
		if err := c.Add(t); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Add puts t in the catalog; a second template of one name is an error.
func (c *Catalog) Add(t *Template) error {
	if c.byName == nil {
		c.byName = map[string]*Template{}
	}
	if _, dup := c.byName[t.Name]; dup {
		return &Error{Template: t.Name, Field: "metadata.name", Err: fmt.Errorf("%w: a template named %q exists", ErrValue, t.Name)}
	}
	c.byName[t.Name] = t
	return nil
}

// Get returns the template called name; ErrUnknownTemplate lists the
// known ones.
func (c *Catalog) Get(name string) (*Template, error) {
	if t, ok := c.byName[name]; ok {
		return t, nil
	}
	return nil, &Error{Field: name, Err: fmt.Errorf("%w: %q (templates: %s)", ErrUnknownTemplate, name, strings.Join(c.Names(), ", "))}
}

// Names returns the templates' names, sorted.
func (c *Catalog) Names() []string {
	out := make([]string, 0, len(c.byName))
	for n := range c.byName {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// List returns the templates sorted by name.
func (c *Catalog) List() []*Template {
	out := make([]*Template, 0, len(c.byName))
	for _, n := range c.Names() {
		out = append(out, c.byName[n])
	}
	return out
}

// Kind returns the template's workload kind (rendered with defaults).
func (t *Template) Kind() WorkloadKind {
	s, err := t.Render(t.standIns())
	if err != nil {
		return ""
	}
	return s.Kind
}
