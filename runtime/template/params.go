package template

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ParamType is the type of a parameter's value.
type ParamType string

// Parameter types. An enum is a string that must be one of Enum; any other
// type may also carry an Enum.
const (
	String ParamType = "string"
	Int    ParamType = "int"
	Float  ParamType = "float"
	Bool   ParamType = "bool"
	Enum   ParamType = "enum"
)

// Param is a template parameter, set with `--set name=value`.
type Param struct {
	Name        string    `yaml:"name" json:"name"`
	Type        ParamType `yaml:"type" json:"type"` // default string
	Description string    `yaml:"description" json:"description,omitempty"`
	Required    bool      `yaml:"required" json:"required,omitempty"`
	Default     *string   `yaml:"default" json:"default,omitempty"`
	Enum        []string  `yaml:"enum" json:"enum,omitempty"`
}

func validParamName(s string) bool {
	if s == "" || len(s) > 64 || strings.HasPrefix(s, "shoal") {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || (i > 0 && (r >= '0' && r <= '9' || r == '-'))
		if !ok {
			return false
		}
	}
	return true
}

func (p *Param) validate(n *yaml.Node, path string) error {
	field := func(key string) *yaml.Node {
		k, _ := mapValue(n, key)
		return orNode(k, n)
	}
	if !validParamName(p.Name) {
		return errAt(field("name"), path+".name", ErrValue, "%q: want letters, digits, _ and -, starting with a letter, not starting with shoal", p.Name)
	}
	if p.Type == "" {
		p.Type = String
	}
	switch p.Type {
	case String, Int, Float, Bool:
	case Enum:
		if len(p.Enum) == 0 {
			return errAt(field("type"), path+".enum", ErrRequired, "parameter %s is an enum without values", p.Name)
		}
	default:
		return errAt(field("type"), path+".type", ErrValue, "%q: want string, int, float, bool or enum", p.Type)
	}
	for i, e := range p.Enum {
		if err := p.check(e, false); err != nil {
			return errAt(field("enum"), fmt.Sprintf("%s.enum[%d]", path, i), ErrType, "%v", err)
		}
	}
	if p.Default != nil {
		if p.Required {
			return errAt(field("default"), path+".default", ErrValue, "parameter %s is required and has a default; choose one", p.Name)
		}
		if err := p.check(*p.Default, true); err != nil {
			return errAt(field("default"), path+".default", ErrType, "%v", err)
		}
	}
	return nil
}

// check reports whether v is a valid value of p.
func (p *Param) check(v string, withEnum bool) error {
	var err error
	switch p.Type {
	case Int:
		_, err = strconv.ParseInt(v, 10, 64)
	case Float:
		_, err = strconv.ParseFloat(v, 64)
	case Bool:
		if v != "true" && v != "false" {
			err = strconv.ErrSyntax
		}
	}
	if err != nil {
		return fmt.Errorf("parameter %s is %s %s, got %q", p.Name, article(p.Type), p.Type, v)
	}
	if withEnum && len(p.Enum) > 0 && !slices.Contains(p.Enum, v) {
		return fmt.Errorf("parameter %s must be one of %s, got %q", p.Name, strings.Join(p.Enum, ", "), v)
	}
	return nil
}

func article(t ParamType) string {
	if t == Int || t == Enum {
		return "an"
	}
	return "a"
}

// resolve checks values against the parameters and returns every
// parameter's value, defaults filled in.
func (t *Template) resolve(values map[string]string) (map[string]string, error) {
	for _, k := range sorted(mapKeys(values)) {
		if t.param(k) == nil {
			return nil, &Error{Template: t.Name, Field: k, Err: fmt.Errorf("%w: %q (parameters: %s)", ErrUnknownParam, k, t.paramNames())}
		}
	}
	out := make(map[string]string, len(t.Parameters))
	for i := range t.Parameters {
		p := &t.Parameters[i]
		v, ok := values[p.Name]
		switch {
		case ok:
		case p.Default != nil:
			v = *p.Default
		case p.Required:
			desc := ""
			if p.Description != "" {
				desc = " (" + p.Description + ")"
			}
			return nil, &Error{Template: t.Name, Field: p.Name, Err: fmt.Errorf("%w: set parameter %s%s with --set %s=VALUE", ErrRequired, p.Name, desc, p.Name)}
		default:
			v = zero(p.Type)
		}
		if err := p.check(v, true); err != nil {
			sentinel := ErrType
			if p.check(v, false) == nil {
				sentinel = ErrValue
			}
			return nil, &Error{Template: t.Name, Field: p.Name, Err: fmt.Errorf("%w: %v", sentinel, err)}
		}
		out[p.Name] = v
	}
	return out, nil
}

func zero(t ParamType) string {
	switch t {
	case Int, Float:
		return "0"
	case Bool:
		return "false"
	}
	return ""
}

// standIns are values for Parse to render with: nothing for parameters with
// a default, a valid stand-in for the required ones.
func (t *Template) standIns() map[string]string {
	out := map[string]string{}
	for _, p := range t.Parameters {
		if !p.Required {
			continue
		}
		switch {
		case len(p.Enum) > 0:
			out[p.Name] = p.Enum[0]
		case p.Type == Int || p.Type == Float:
			out[p.Name] = "1"
		case p.Type == Bool:
			out[p.Name] = "true"
		default:
			out[p.Name] = "example"
		}
	}
	return out
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// ParseSets turns `--set name=value` arguments into values for Render. A
// name given twice keeps the last value.
func ParseSets(sets []string) (map[string]string, error) {
	out := make(map[string]string, len(sets))
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, &Error{Field: s, Err: fmt.Errorf("%w: want --set name=value, got %q", ErrValue, s)}
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, nil
}

func timeDuration(d Duration) time.Duration { return time.Duration(d) }
