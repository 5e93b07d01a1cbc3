package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"

	yaml "go.yaml.in/yaml/v3"
)

// Unmarshal decodes one YAML (1.2) or JSON document into v through its JSON
// form, so that the json tags of the API types apply. YAML 1.2 matters here:
// the YAML 1.1 decoders of the Kubernetes tooling read an unquoted `y` or `n`
// (the Kubernetes e2e model's namespace "y") as a boolean and turn it into the
// string "true"; this one keeps it "y". With strict, unknown fields are errors.
func Unmarshal(doc []byte, v any, strict bool) error {
	var generic any
	if err := yaml.Unmarshal(doc, &generic); err != nil {
		return err
	}
	return decodeGeneric(generic, v, strict)
}

// decodeGeneric decodes the generic form of a YAML document into v through
// its JSON form.
func decodeGeneric(generic, v any, strict bool) error {
	generic, err := jsonable(generic)
	if err != nil {
		return err
	}
	b, err := json.Marshal(generic)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	return dec.Decode(v)
}

// jsonable turns YAML maps with non-string keys into JSON objects.
func jsonable(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
		return t, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			switch k.(type) {
			case string, int, int64, uint64, float64, bool:
				out[fmt.Sprint(k)] = c
			default:
				return nil, fmt.Errorf("unsupported map key %v of type %T", k, k)
			}
		}
		return out, nil
	case []any:
		for i, e := range t {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
		return t, nil
	}
	return v, nil
}
