package command

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// The flags that are not settings of the config file.
const (
	flagConfig      = "config"
	flagPrintConfig = "print-config"
	flagHelp        = "help"
	flagVersion     = "version"
)

// maxConfigFile bounds the --config file: a file of every setting with its comment is
// a few KiB; a larger one is refused before it is parsed.
const maxConfigFile = 1 << 20

// FileError is a mistake in the config file, at a line of it. Its text is "FILE:LINE: ...".
type FileError struct {
	File string
	Line int
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *FileError) Unwrap() error { return e.Err }

// isSetting reports whether flag f may be set in the config file and is printed by
// --print-config: every flag but --config, --print-config, --help, --version and the hidden ones
// (drills and tests only). A flag added to the command is a setting without more code.
func isSetting(f *pflag.Flag) bool {
	return !f.Hidden && f.Name != flagConfig && f.Name != flagPrintConfig && f.Name != flagHelp &&
		f.Name != flagVersion
}

// LoadConfigFile sets the flags of fs from the TOML file at path: each top-level key is a
// flag's long name, with a value of the flag's type (a string for durations, an array of
// strings for repeatable flags). Flags already given on the command line keep their value.
// Every unknown key, wrong type and bad value is reported as a *FileError with its line;
// nothing is set from a file with a syntax error.
func LoadConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := readConfigFile(path)
	if err != nil {
		return err
	}
	return decodeConfigFile(fs, path, data)
}

// readConfigFile reads the --config file, at most maxConfigFile bytes.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the --config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading the --config file: %w", err)
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("the --config file %s is over %d bytes: is it the right file? (pmgclusterd --print-config writes one)", path, maxConfigFile)
	}
	return data, nil
}

// decodeConfigFile is LoadConfigFile of the contents data of the file at path.
func decodeConfigFile(fs *pflag.FlagSet, path string, data []byte) error {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return &FileError{File: path, Line: pe.Position.Line, Err: fmt.Errorf("not valid TOML: %s", pe.Message)}
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	seen := map[string]bool{}
	for _, key := range md.Keys() {
		// Each top-level key once, at its first key in the file: a table or dotted key is
		// reported at its first line.
		name := key[0]
		if seen[name] {
			continue
		}
		seen[name] = true
		s := &setting{fs: fs, name: name}
		if f := fs.Lookup(name); f != nil && isSetting(f) {
			s.flag = f
		}
		if err := md.PrimitiveDecode(top[name], s); err != nil {
			var pe toml.ParseError
			if !errors.As(err, &pe) {
				return fmt.Errorf("%s: %w", path, err)
			}
			if s.err == nil {
				s.err = errors.New(pe.Message)
			}
			line := pe.Position.Line
			if line == 0 { // a table made implicitly by a dotted key has no line of its own
				line = keyLine(&md, top[name], key)
			}
			errs = append(errs, &FileError{File: path, Line: line, Err: s.err})
		}
	}
	return errors.Join(errs...)
}

// keyLine returns the line of key in the file, whose top-level key has the value prim, or
// of the nearest table above it that has a line; 0 when none has. The decoder knows the
// line of every key but tells it only in its errors: lineProbe makes one at each level.
func keyLine(md *toml.MetaData, prim toml.Primitive, key toml.Key) int {
	line := 0
	for depth := 1; ; depth++ {
		var pe toml.ParseError
		if err := md.PrimitiveDecode(prim, lineProbe{}); errors.As(err, &pe) && pe.Position.Line > 0 {
			line = pe.Position.Line
		}
		if depth == len(key) {
			return line
		}
		var sub map[string]toml.Primitive
		if err := md.PrimitiveDecode(prim, &sub); err != nil {
			return line
		}
		prim = sub[key[depth]]
	}
}

// lineProbe fails to decode anything, so that the decoder says where the value is.
type lineProbe struct{}

// UnmarshalTOML implements toml.Unmarshaler.
func (lineProbe) UnmarshalTOML(any) error { return errors.New("probe") }

// setting decodes the value of one key of the config file into its flag. Through
// toml.Unmarshaler the decoder turns its errors into a toml.ParseError at the key's line;
// err keeps the original for FileError.
type setting struct {
	fs   *pflag.FlagSet
	name string
	flag *pflag.Flag // nil when name is no setting
	err  error
}

// UnmarshalTOML implements toml.Unmarshaler.
func (s *setting) UnmarshalTOML(v any) error {
	s.err = s.set(v)
	return s.err
}

func (s *setting) set(v any) error {
	if s.flag == nil {
		return fmt.Errorf("unknown setting %q: the settings are the flags of pmgclusterd without "+
			"their dashes, see pmgclusterd --print-config", s.name)
	}
	kind, want := flagKind(s.flag)
	var text string
	var list []string
	switch kind {
	case kindBool:
		b, ok := v.(bool)
		if !ok {
			return s.wrongType(want, v)
		}
		text = strconv.FormatBool(b)
	case kindInt:
		i, ok := v.(int64)
		if !ok {
			return s.wrongType(want, v)
		}
		text = strconv.FormatInt(i, 10)
	case kindFloat:
		switch x := v.(type) {
		case float64:
			text = strconv.FormatFloat(x, 'g', -1, 64)
		case int64:
			text = strconv.FormatInt(x, 10)
		default:
			return s.wrongType(want, v)
		}
	case kindList:
		arr, ok := v.([]any)
		if !ok {
			return s.wrongType(want, v)
		}
		list = make([]string, 0, len(arr))
		for _, e := range arr {
			str, ok := e.(string)
			if !ok {
				return fmt.Errorf("%s: want %s, got an array holding %s", s.name, want, tomlType(e))
			}
			list = append(list, str)
		}
	default:
		str, ok := v.(string)
		if !ok {
			return s.wrongType(want, v)
		}
		text = str
	}
	if s.flag.Changed {
		return nil // given on the command line, which wins
	}
	if kind == kindList {
		if sv, ok := s.flag.Value.(pflag.SliceValue); ok {
			if err := sv.Replace(list); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.flag.Changed = true
			return nil
		}
		for _, e := range list {
			if err := s.setText(e); err != nil {
				return err
			}
		}
		return nil
	}
	return s.setText(text)
}

// setText sets the flag from text as the command line would.
func (s *setting) setText(text string) error {
	err := s.fs.Set(s.name, text)
	if err == nil {
		return nil
	}
	if u := errors.Unwrap(err); u != nil {
		err = u // pflag's wrapper names the flag with dashes
	}
	return fmt.Errorf("%s: bad value %q: %w", s.name, text, err)
}

func (s *setting) wrongType(want string, v any) error {
	return fmt.Errorf("%s: want %s, got %s", s.name, want, tomlType(v))
}

// The kinds of TOML value that flags take.
const (
	kindString = iota // a string, parsed by the flag (durations, addresses, ...)
	kindBool
	kindInt
	kindFloat
	kindList // an array of strings
)

// flagKind returns the kind of TOML value flag f takes, and how to say it in an error.
func flagKind(f *pflag.Flag) (kind int, want string) {
	switch f.Value.Type() {
	case "bool":
		return kindBool, "a boolean (true or false)"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return kindInt, "an integer"
	case "float32", "float64":
		return kindFloat, "a number"
	case "stringSlice", "stringArray":
		return kindList, `an array of strings (like ["a", "b"])`
	case "duration":
		return kindString, `a duration string (like "500ms" or "2s")`
	}
	return kindString, "a string"
}

// tomlType names the type of a decoded TOML value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date/time"
}

// WriteConfig writes the settings of fs as a TOML file that LoadConfigFile reads back to
// the same values: each setting with its usage as a comment, in the order of the flags.
func WriteConfig(w io.Writer, fs *pflag.FlagSet) error {
	var buf bytes.Buffer
	buf.WriteString("# pmgclusterd settings: pmgclusterd --config FILE reads them; flags override them.\n")
	sorted := fs.SortFlags
	fs.SortFlags = false
	defer func() { fs.SortFlags = sorted }()
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || !isSetting(f) {
			return
		}
		var v any
		if v, err = tomlValue(f); err != nil {
			return
		}
		_, usage := pflag.UnquoteUsage(f)
		fmt.Fprintf(&buf, "\n# %s\n", usage)
		err = toml.NewEncoder(&buf).Encode(map[string]any{f.Name: v})
	})
	if err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// tomlValue returns the value of flag f as the Go value the TOML encoder writes in the
// kind LoadConfigFile takes.
func tomlValue(f *pflag.Flag) (any, error) {
	kind, _ := flagKind(f)
	s := f.Value.String()
	var v any
	var err error
	switch kind {
	case kindBool:
		v, err = strconv.ParseBool(s)
	case kindInt:
		if f.Value.Type()[0] == 'u' {
			v, err = strconv.ParseUint(s, 10, 64)
		} else {
			v, err = strconv.ParseInt(s, 10, 64)
		}
	case kindFloat:
		v, err = strconv.ParseFloat(s, 64)
	case kindList:
		list := []string{}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			list = append(list, sv.GetSlice()...)
		} else if s != "[]" && s != "" {
			list = append(list, s)
		}
		v = list
	default:
		v = s
	}
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", f.Name, err)
	}
	return v, nil
}
