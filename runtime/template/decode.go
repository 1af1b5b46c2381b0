package template

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Errors of templates and their parameters. Each comes wrapped in an *Error
// that names the template, the field and, where there is one, the line.
var (
	ErrSyntax          = errors.New("template: YAML syntax")
	ErrUnknownField    = errors.New("template: unknown field")
	ErrType            = errors.New("template: wrong type")
	ErrRequired        = errors.New("template: required")
	ErrValue           = errors.New("template: invalid value")
	ErrUnknownParam    = errors.New("template: unknown parameter")
	ErrUnknownTemplate = errors.New("template: unknown template")
)

// Error is a template or parameter error: which template, where, which
// field and why.
type Error struct {
	Template string // metadata.name, or "" before it is known
	Line     int    // 1-based line in the template's YAML; 0 when the error is not in the YAML (a --set value)
	Column   int
	Field    string // dotted path, e.g. spec.runtime.port, or the parameter
	Err      error  // wraps one of the sentinels
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Template != "" {
		fmt.Fprintf(&b, "template %q: ", e.Template)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "%s: ", e.Field)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func errAt(n *yaml.Node, field string, sentinel error, format string, args ...any) *Error {
	e := &Error{Field: field, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	return e
}

// scalarDecoder is a leaf type that parses itself from a YAML scalar.
type scalarDecoder interface {
	decodeScalar(s string) error
}

// decodeStrict decodes n into out (a pointer), refusing unknown fields and
// values of the wrong type, and naming the line of each mistake. Field names
// come from `yaml:"name"` tags. It exists because yaml.v3 can be strict
// (KnownFields) only when decoding bytes, not nodes, and our nodes have had
// parameters substituted.
func decodeStrict(n *yaml.Node, out any, path string) error {
	return decodeValue(n, reflect.ValueOf(out).Elem(), path)
}

func decodeValue(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		return errAt(n, path, ErrValue, "YAML aliases are not supported")
	}
	if v.CanAddr() {
		if sd, ok := v.Addr().Interface().(scalarDecoder); ok {
			if n.Kind != yaml.ScalarNode {
				return errAt(n, path, ErrType, "want a single value, got %s", kindName(n))
			}
			if err := sd.decodeScalar(n.Value); err != nil {
				return errAt(n, path, ErrType, "%v", err)
			}
			return nil
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := decodeValue(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		return decodeStruct(n, v, path)
	case reflect.Slice:
		if isNull(n) {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return errAt(n, path, ErrType, "want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := decodeValue(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if isNull(n) {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return errAt(n, path, ErrType, "want a mapping, got %s", kindName(n))
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return errAt(k, path, ErrType, "keys must be plain strings")
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if err := decodeValue(val, e, path+"."+k.Value); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return errAt(n, path, ErrType, "want a single value, got %s", kindName(n))
	}
	s := n.Value
	switch v.Kind() {
	case reflect.String:
		if isNull(n) {
			return nil
		}
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		x, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v.OverflowInt(x) {
			return errAt(n, path, ErrType, "want an integer, got %q", s)
		}
		v.SetInt(x)
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return errAt(n, path, ErrType, "want a number, got %q", s)
		}
		v.SetFloat(x)
	case reflect.Bool:
		switch s {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return errAt(n, path, ErrType, "want true or false, got %q", s)
		}
	default:
		return errAt(n, path, ErrType, "cannot hold a %s", v.Kind())
	}
	return nil
}

func decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errAt(n, path, ErrType, "want a mapping, got %s", kindName(n))
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		fp := k.Value
		if path != "" {
			fp = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		if !ok {
			return errAt(k, fp, ErrUnknownField, "%q is not a field here (fields: %s)", k.Value, strings.Join(sorted(names), ", "))
		}
		if seen[k.Value] {
			return errAt(k, fp, ErrValue, "set twice")
		}
		seen[k.Value] = true
		if err := decodeValue(val, v.Field(idx), fp); err != nil {
			return err
		}
	}
	return nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Style == 0 && (n.Value == "null" || n.Value == "~" || n.Value == "") && n.Tag != "!!str"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mapValue returns the value node of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) (k, v *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}
