package streaming

import "reflect"

// JSONKind names the JSON value a Go type decodes from ("a string", "an
// integer", "an object" …), for messages about a client's JSON that must
// not show Go's type names. The packages that decode clients' JSON
// (streaming, session, web) share it.
func JSONKind(t reflect.Type) string {
	if t == nil {
		return "another JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return JSONKind(t.Elem())
	}
	return "another JSON value"
}
