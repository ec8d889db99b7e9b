package web

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"

	"sessiond/session"
	"sessiond/streaming/jsonscan"
)

// decodePostRequest is decodeJSON for POST /turns, the one body that may
// carry a 32 MiB turn. The body is read once and split with jsonscan; each
// content stays a subslice of it. (encoding/json's decoder scanned it twice
// and copied every content: a third of such a POST's CPU.) It accepts what
// decodeJSON accepts and refuses the rest with the same status and code:
// field names match without regard to case, unknown fields are refused,
// null leaves a field empty (FuzzPostRequestDecoders holds the two to it).
// The caller releases body once it is done with req, whose contents are
// slices of the body's bytes.
func decodePostRequest(body *requestBody, contentLength, limit int64, req *session.PostRequest) error {
	b, err := readBody(body, contentLength, limit)
	if err != nil {
		return decodeError(err)
	}
	return parsePostRequest(b, req)
}

// readBody reads all of body (which enforces the limit). The buffer starts
// at the request's Content-Length, up to 1 MiB, and doubles as bytes
// arrive, up to limit+1: a client that announces 32 MiB and sends nothing
// costs 1 MiB, not 32.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	size := int64(512)
	if contentLength > 0 {
		size = min(contentLength, limit, 1<<20) + 1 // +1: EOF without growing
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// typeError is decodeError's answer to a value of the wrong type: want
// names a JSON kind (streaming.JSONKind), field is "" for the body itself.
func typeError(field, want string) error {
	if field == "" {
		return errorf(http.StatusBadRequest, "invalid_request", "the body must be %s", want)
	}
	return errorf(http.StatusBadRequest, "invalid_request", "field %q must be %s", field, want)
}

func unknownField(name string) error {
	return errorf(http.StatusBadRequest, "invalid_request", "unknown field %q (field names are exact, in lower case)", name)
}

// duplicateField refuses a member given twice: the last would win
// silently, where a proxy or validator may read the first.
func duplicateField(name string) error {
	return errorf(http.StatusBadRequest, "invalid_request", "field %q appears twice", name)
}

func parsePostRequest(body []byte, req *session.PostRequest) error {
	i := 0
	for i < len(body) && jsonscan.IsSpace(body[i]) {
		i++
	}
	if i == len(body) {
		return decodeError(io.EOF)
	}
	end, err := jsonscan.First(body) // the value's UTF-8 too, in the same pass
	var se *jsonscan.SyntaxError
	if errors.Is(err, jsonscan.ErrInvalidUTF8) && errors.As(err, &se) {
		return errNotUTF8(int64(se.Offset))
	}
	if err != nil {
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.Detail() // without the package's prefix, as other bodies' messages
		}
		return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON: %s", msg)
	}
	value := body[i:end]
	switch {
	case string(value) == "null":
	case value[0] != '{':
		return typeError("", "an object")
	default:
		var seen uint8 // a bit per field of postFields
		if err := jsonscan.Object(value, func(k string, v []byte) error {
			if i := slices.Index(postFields, k); i >= 0 {
				if seen&(1<<i) != 0 {
					return duplicateField(k)
				}
				seen |= 1 << i
			}
			return postField(req, k, v)
		}); err != nil {
			return err
		}
	}
	for j := end; j < len(body); j++ {
		if !jsonscan.IsSpace(body[j]) {
			return errorf(http.StatusBadRequest, "invalid_json", "the body holds more than one JSON value")
		}
	}
	return nil
}

// postFields are the members a post's body takes.
var postFields = []string{"turns", "generate", "model", "parent_id", "root"}

func postField(req *session.PostRequest, k string, v []byte) error {
	switch {
	case k == "turns":
		turns, err := session.DecodeNewTurns(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_request", "%v", err)
		}
		req.Turns = turns
	case k == "generate":
		switch string(v) {
		case "true":
			req.Generate = true
		case "false":
			req.Generate = false
		case "null":
		default:
			return typeError("generate", "true or false")
		}
	case k == "model":
		switch {
		case string(v) == "null":
		case v[0] != '"':
			return typeError("model", "a string")
		default:
			return json.Unmarshal(v, &req.Model)
		}
	case k == "parent_id":
		if string(v) == "null" {
			return nil
		}
		if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
			return typeError("parent_id", "an integer")
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return typeError("parent_id", "an integer")
		}
		req.Parent = n
	case k == "root":
		switch string(v) {
		case "true":
			req.Root = true
		case "false":
			req.Root = false
		case "null":
		default:
			return typeError("root", "true or false")
		}
	default:
		return unknownField(k)
	}
	return nil
}
