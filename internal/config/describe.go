package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// KeyInfo describes one configuration key.
type KeyInfo struct {
	Key     string
	Env     string
	Type    string
	Default string
	Doc     string
}

// Describe lists every key with its environment variable, type, default and meaning.
func Describe() []KeyInfo {
	var out []KeyInfo
	def := reflect.ValueOf(Default())
	walk(def, "", func(key string, f reflect.StructField, v reflect.Value) {
		out = append(out, KeyInfo{Key: key, Env: EnvName(key), Type: typeName(f.Type), Default: render(key, v), Doc: f.Tag.Get("doc")})
	})
	return out
}

// walk calls fn for every leaf field of v, with its dotted key.
func walk(v reflect.Value, prefix string, fn func(key string, f reflect.StructField, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if secs, ok := v.Field(i).Interface().(Sections); ok {
			names := slices.Sorted(maps.Keys(secs))
			for _, name := range names {
				walk(reflect.ValueOf(secs[name]).Elem(), prefix+name+".", fn)
			}
			continue
		}
		name := f.Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			walk(v.Field(i), prefix+name+".", fn)
			continue
		}
		fn(prefix+name, f, v.Field(i))
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "list of strings"
	case t.Kind() == reflect.Slice:
		return "list of maps"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	}
	return t.Kind().String()
}

// render formats a value for people, secrets masked.
func render(key string, v reflect.Value) string {
	var s string
	switch x := v.Interface().(type) {
	case time.Duration:
		s = x.String()
	case []string:
		s = "[" + strings.Join(x, ", ") + "]"
	case []map[string]any:
		b, _ := json.Marshal(x)
		s = string(b)
	default:
		s = fmt.Sprint(x)
	}
	return mask(key, s)
}

var passwordParam = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// mask hides passwords: a whole password key, and the password inside a DSN.
func mask(key, value string) string {
	switch {
	case value == "":
		return value
	case strings.HasSuffix(key, ".password"):
		return "****"
	case strings.HasSuffix(key, ".dsn"):
		if u, err := url.Parse(value); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), "****")
				return strings.Replace(u.String(), "%2A%2A%2A%2A", "****", 1)
			}
			return value
		}
		return passwordParam.ReplaceAllString(value, "${1}****")
	}
	return value
}

// Setting is one key's effective value and where it came from: file, env (with the variable),
// flag (--set) or default.
type Setting struct {
	Key, Value, Source string
}

// Show loads the configuration as Load does and tells, for every key, its value (secrets masked)
// and where it came from.
func Show(path string, overrides []string) ([]Setting, error) {
	cfg, err := Load(path, overrides)
	if err != nil {
		return nil, err
	}
	file := viper.New()
	if path != "" {
		file.SetConfigFile(path)
		if err := file.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	var flagged []string
	for _, o := range overrides {
		k, _, _ := strings.Cut(o, "=")
		flagged = append(flagged, strings.TrimSpace(k))
	}
	var out []Setting
	walk(reflect.ValueOf(cfg), "", func(key string, _ reflect.StructField, v reflect.Value) {
		src := "default"
		switch {
		case slices.Contains(flagged, key):
			src = "flag"
		case os.Getenv(EnvName(key)) != "":
			src = "env " + EnvName(key)
		case path != "" && file.IsSet(key):
			src = "file"
		}
		out = append(out, Setting{Key: key, Value: render(key, v), Source: src})
	})
	return out, nil
}
