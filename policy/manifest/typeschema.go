package manifest

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// schemaOf derives a Schema from a Go API type's JSON form, for the inputs
// that have no CRD (a NetworkPolicy, the workloads file): the field names and
// types, nothing of what the type's own validation checks.
func schemaOf(t reflect.Type) *Schema {
	return typeSchema(t, map[reflect.Type]*Schema{})
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func typeSchema(t reflect.Type, seen map[reflect.Type]*Schema) *Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := seen[t]; ok {
		return s
	}
	switch t {
	case reflect.TypeFor[intstr.IntOrString]():
		return &Schema{IntOrString: true}
	case reflect.TypeFor[metav1.Time](), reflect.TypeFor[metav1.MicroTime]():
		return &Schema{Type: "string"}
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(textUnmarshalerType) && !pt.Implements(jsonUnmarshalerType) {
		return &Schema{Type: "string"} // netip.Addr, netip.Prefix
	}
	if pt.Implements(jsonUnmarshalerType) {
		return &Schema{PreserveUnknown: true} // decodes itself (Quantity, RawExtension)
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &Schema{Type: "object", Properties: map[string]*Schema{}}
		seen[t] = s
		addStructFields(s, t, seen)
		return s
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return &Schema{Type: "string"}
		}
		return &Schema{Type: "array", Items: typeSchema(t.Elem(), seen)}
	case reflect.Map:
		return &Schema{Type: "object", AdditionalProperties: typeSchema(t.Elem(), seen)}
	case reflect.String:
		return &Schema{Type: "string"}
	case reflect.Bool:
		return &Schema{Type: "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s := &Schema{Type: "integer"}
		if t.Kind() == reflect.Int32 {
			s.Format = "int32"
		}
		return s
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}
	}
	return &Schema{PreserveUnknown: true}
}

func addStructFields(s *Schema, t reflect.Type, seen map[reflect.Type]*Schema) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addStructFields(s, ft, seen)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.Properties[name] = typeSchema(f.Type, seen)
	}
}
