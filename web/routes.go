package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"sessiond/session"
)

// route is one endpoint under /v1. The table drives both the router and the
// OpenAPI document, so the two cannot drift apart.
type route struct {
	method, path string
	op, summary  string
	body         string // request schema ("" none, "ndjson" for an import)
	status       int    // success status
	result       string // success schema ("" none, "sse", "ndjson")
	sse          bool   // also answers text/event-stream when asked
	noContent    string // when set, also answers 204 then, as this says
	params       []param
	errors       []int
	public       bool // no API key (its own check, or none)
	handle       func(*api, http.ResponseWriter, *http.Request) error
}

type param struct{ name, in, typ, doc string }

var (
	pID        = param{"id", "path", "string", "session id"}
	pCreateKey = param{"Idempotency-Key", "header", "string", "a repeat with the same key (within 24 hours) returns the session the first made; 409 after that session was deleted"}
	pGID       = param{"gid", "path", "string", "generation id"}
	// 403: a page of another site while auth is off (authenticator.checkBrowser).
	// 408: a body slower than 64 KiB/s; 429: an owner's streams, all open.
	common   = []int{400, 401, 403, 404, 503}
	writing  = []int{400, 401, 403, 404, 408, 409, 413, 422, 503}
	streamed = []int{400, 401, 403, 404, 408, 409, 413, 422, 429, 503}
)

var routes = []route{
	{method: "POST", path: "/sessions", op: "createSession", summary: "Create a session", body: "CreateRequest", status: 201, result: "Session",
		params: []param{pCreateKey}, errors: writing, handle: createSession},
	{method: "GET", path: "/sessions", op: "listSessions", summary: "List the caller's sessions, most recently active first", status: 200, result: "SessionList",
		params: []param{{"limit", "query", "integer", "1 to 100, default 20"}, {"cursor", "query", "string", "next_cursor of the previous page"}, {"owner", "query", "string", "admin keys only: whose sessions (another key: its own owner only, else 403)"}},
		errors: []int{400, 401, 403, 404, 422, 503}, handle: listSessions},
	{method: "POST", path: "/sessions/import", op: "importSession", summary: "Import a session exported as JSON lines", body: "ndjson", status: 201, result: "Session",
		params: []param{pCreateKey}, errors: writing, handle: importSession},
	{method: "GET", path: "/sessions/{id}", op: "getSession", summary: "Get a session", status: 200, result: "Session", params: []param{pID},
		errors: common, handle: getSession},
	{method: "PATCH", path: "/sessions/{id}", op: "updateSession", summary: "Change title, model, system prompt, metadata or busy policy", body: "UpdateRequest",
		status: 200, result: "Session", params: []param{pID}, errors: writing, handle: updateSession},
	{method: "DELETE", path: "/sessions/{id}", op: "deleteSession", summary: "Delete a session and all its data", status: 204, params: []param{pID},
		errors: common, handle: deleteSession},
	{method: "GET", path: "/sessions/{id}/turns", op: "listTurns", summary: "Page through the turns of a branch", status: 200, result: "TurnList",
		params: []param{pID, {"after", "query", "integer", "page starts just after this turn id (ascending); has_more means newer turns exist"},
			{"before", "query", "integer", "the newest turns before this id; has_more means older turns exist; with after, 400"},
			{"limit", "query", "integer", "1 to 1000, default 50; a page ends early, has_more true, where its turns' content and tool calls would pass 16 MiB (it always holds one turn)"}, {"branch", "query", "integer", "leaf turn id of the branch; default the session's head; a turn that does not exist is 422"}},
		errors: []int{400, 401, 403, 404, 422, 503}, handle: listTurns},
	{method: "POST", path: "/sessions/{id}/turns", op: "postTurns", summary: "Append turns (user messages or tool results) and optionally generate; with Accept: text/event-stream the generation is streamed",
		body: "PostRequest", status: 201, result: "PostResult", sse: true,
		params: []param{pID, {"Idempotency-Key", "header", "string", "a repeat with the same key returns the original result"}},
		errors: streamed, handle: postTurns},
	{method: "GET", path: "/sessions/{id}/generations/{gid}", op: "getGeneration", summary: "Get a generation", status: 200, result: "Generation",
		params: []param{pID, pGID}, errors: common, handle: getGeneration},
	{method: "GET", path: "/sessions/{id}/generations/{gid}/stream", op: "streamGeneration", summary: "Stream a generation's events as SSE; Last-Event-ID resumes",
		status: 200, result: "sse", params: []param{pID, pGID, {"Last-Event-ID", "header", "integer", "the last offset seen"}, {"after", "query", "integer", "the last offset seen, when the header cannot be set"}},
		noContent: "the generation has ended and its final event was seen: nothing follows (an EventSource stops reconnecting)",
		errors:    []int{400, 401, 403, 404, 429, 503}, handle: streamGeneration},
	{method: "POST", path: "/sessions/{id}/generations/{gid}/cancel", op: "cancelGeneration", summary: "Cancel a generation (idempotent); answers its final state",
		status: 200, result: "Generation", params: []param{pID, pGID}, errors: common, handle: cancelGeneration},
	{method: "POST", path: "/sessions/{id}/fork", op: "forkSession", summary: "Create a session holding a copy of the branch up to a turn", body: "ForkRequest",
		status: 201, result: "Session", params: []param{pID, pCreateKey}, errors: writing, handle: forkSession},
	{method: "GET", path: "/sessions/{id}/export", op: "exportSession", summary: "Export a session as JSON lines: the session, then every turn",
		status: 200, result: "ndjson", params: []param{pID}, errors: common, handle: exportSession},
	{method: "GET", path: "/sessions/{id}/ws", op: "sessionSocket", summary: "WebSocket of a session (see docs/protocol.md); authenticated by ?ticket=",
		status: 101, params: []param{pID, {"ticket", "query", "string", "from POST /v1/tickets"}}, errors: []int{401, 403, 404, 426, 429, 503}, public: true, handle: sessionSocket},
	{method: "POST", path: "/tickets", op: "createTicket", summary: "A short-lived ticket to open a session's WebSocket", body: "TicketRequest",
		status: 201, result: "Ticket", errors: writing, handle: createTicket},
}

// The document's own route is added at init: its handler reads the table.
func init() {
	routes = append(routes, route{method: "GET", path: "/openapi.json", op: "openAPI", summary: "This document",
		status: 200, public: true, handle: openAPI})
}

var schemas = map[string]any{
	"Error": obj(props{"error": obj(props{"code": str("stable snake_case code"), "message": str("for humans")}, "code", "message")}, "error"),
	"Session": obj(props{
		"id": str(""), "title": str(""), "model": str(""), "system": str("system prompt"), "owner": str(""),
		"metadata": map[string]any{"type": "object"}, "busy_policy": enum("queue", "reject", "interrupt"),
		"created_at": dt(), "updated_at": dt(), "last_turn_id": integer(), "head_turn_id": integer(),
		"generation": nullable(obj(props{"id": str(""), "status": enum("queued", "running"), "offset": integer()})),
	}, "id", "title", "model", "system", "owner", "metadata", "created_at", "updated_at", "last_turn_id", "generation"),
	"SessionList": obj(props{"sessions": arr(obj(props{"id": str(""), "title": str(""), "preview": str("the head turn's text, one line (or the nearest turn's above it on its branch with text)"),
		"created_at": dt(), "updated_at": dt()})), "next_cursor": nullable(str(""))}, "sessions", "next_cursor"),
	"Turn": obj(props{
		"id": integer(), "parent_id": nullable(integer()), "role": enum("system", "user", "assistant", "tool"),
		"content":      map[string]any{"description": "a string, or an array of content parts ({type: text, text})"},
		"tool_calls":   arr(obj(props{"id": str(""), "type": str("function"), "function": obj(props{"name": str(""), "arguments": str("JSON text")})})),
		"tool_call_id": nullable(str("")), "model": nullable(str("")),
		"usage":         nullable(obj(props{"prompt_tokens": integer(), "completion_tokens": integer(), "total_tokens": integer()})),
		"finish_reason": nullable(str("")), "status": enum("complete", "streaming", "cancelled", "failed", "interrupted"),
		"error": nullable(obj(props{"code": str(""), "message": str("")})), "generation_id": nullable(str("")), "created_at": dt(),
	}, "id", "parent_id", "role", "content", "tool_calls", "tool_call_id", "model", "usage", "finish_reason", "status", "error", "generation_id", "created_at"),
	"TurnList": obj(props{"turns": arr(ref("Turn")), "has_more": boolean()}, "turns", "has_more"),
	"Generation": obj(props{"id": str(""), "status": enum("queued", "running", "done", "cancelled", "failed", "interrupted"),
		"turn_id": integer(), "offset": integer(), "error": nullable(obj(props{"code": str(""), "message": str("")}))}, "id", "status", "turn_id", "offset", "error"),
	"CreateRequest": obj(props{"id": str("optional: 1-128 of A-Z a-z 0-9 _ -"), "title": str(""), "model": str(""), "system": str(""),
		"metadata": metadataSchema(), "busy_policy": enum("queue", "reject", "interrupt")}),
	"UpdateRequest": obj(props{"title": str(""), "model": str(""), "system": str(""), "metadata": metadataSchema(),
		"busy_policy": enum("queue", "reject", "interrupt")}), // "" is 422 here; on a create it is the default
	"NewTurn": obj(props{"role": enum("user", "tool"), "content": map[string]any{"description": "a string or an array of content parts"},
		"tool_call_id": str("required for role tool")}, "role", "content"),
	"PostRequest": described("turns, generate or both: {\"generate\": true} alone answers the branch's last turn anew; neither is 422", obj(props{"turns": arr(ref("NewTurn")), "generate": boolean(), "model": str("override the session's model for this generation"),
		"parent_id": integer("append under this turn instead of the head (edit or regenerate: a new branch); 0 or null: the head"),
		"root":      map[string]any{"type": "boolean", "description": "append the turns with no parent: a new branch beside the first turn (an edit of the first message); needs turns, excludes parent_id"}})),
	"PostResult":    obj(props{"turns": arr(ref("Turn")), "generation": nullable(ref("Generation"))}, "turns", "generation"),
	"ForkRequest":   obj(props{"turn_id": integer()}, "turn_id"),
	"TicketRequest": obj(props{"session_id": str("")}, "session_id"),
	"Ticket":        obj(props{"ticket": str(""), "expires_at": dt()}, "ticket", "expires_at"),
}

type props map[string]any

func obj(p props, required ...string) map[string]any {
	m := map[string]any{"type": "object", "properties": p}
	if len(required) > 0 {
		m["required"] = required
	}
	return m
}

// metadataSchema is a request's metadata: over its limits, 413 too_large.
func metadataSchema() map[string]any {
	return described(fmt.Sprintf("any JSON object of up to %d bytes, nested up to %d levels deep (the object itself the first)",
		session.MaxMetadataBytes, session.MaxMetadataDepth), map[string]any{"type": "object"})
}

func described(doc string, m map[string]any) map[string]any {
	m["description"] = doc
	return m
}
func str(doc string) map[string]any {
	m := map[string]any{"type": "string"}
	if doc != "" {
		m["description"] = doc
	}
	return m
}
func integer(doc ...string) map[string]any {
	m := map[string]any{"type": "integer", "format": "int64"}
	if len(doc) > 0 {
		m["description"] = doc[0]
	}
	return m
}
func boolean() map[string]any { return map[string]any{"type": "boolean"} }
func dt() map[string]any      { return map[string]any{"type": "string", "format": "date-time"} }
func arr(items any) map[string]any {
	return map[string]any{"type": "array", "items": items}
}
func enum(v ...string) map[string]any { return map[string]any{"type": "string", "enum": v} }
func ref(name string) map[string]any  { return map[string]any{"$ref": "#/components/schemas/" + name} }
func nullable(s map[string]any) map[string]any {
	return map[string]any{"oneOf": []any{s, map[string]any{"type": "null"}}}
}

var (
	openAPIOnce sync.Once
	openAPIJSON []byte
)

// openAPIDocument is the OpenAPI 3.1 document of the routes table.
func openAPIDocument() []byte {
	openAPIOnce.Do(func() {
		paths := map[string]map[string]any{}
		for _, rt := range routes {
			p := "/v1" + rt.path
			if paths[p] == nil {
				paths[p] = map[string]any{}
			}
			op := map[string]any{"operationId": rt.op, "summary": rt.summary}
			var ps []any
			for _, prm := range rt.params {
				ps = append(ps, map[string]any{"name": prm.name, "in": prm.in, "required": prm.in == "path",
					"description": prm.doc, "schema": map[string]any{"type": prm.typ}})
			}
			if ps != nil {
				op["parameters"] = ps
			}
			switch rt.body {
			case "":
			case "ndjson":
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/x-ndjson": map[string]any{}}}
			default:
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref(rt.body)}}}
			}
			ok := map[string]any{"description": http.StatusText(rt.status)}
			content := map[string]any{}
			switch rt.result {
			case "":
			case "sse":
				content["text/event-stream"] = map[string]any{}
			case "ndjson":
				content["application/x-ndjson"] = map[string]any{}
			default:
				content["application/json"] = map[string]any{"schema": ref(rt.result)}
			}
			if len(content) > 0 {
				ok["content"] = content
			}
			resp := map[string]any{itoa(rt.status): ok}
			if rt.sse {
				resp["200"] = map[string]any{"description": "the generation as SSE (Accept: text/event-stream)",
					"content": map[string]any{"text/event-stream": map[string]any{}}}
			}
			if rt.noContent != "" {
				resp["204"] = map[string]any{"description": rt.noContent}
			}
			for _, code := range append(slices.Clone(rt.errors), http.StatusInternalServerError) {
				e := map[string]any{"description": http.StatusText(code),
					"content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
				switch code {
				case http.StatusUnauthorized:
					e["headers"] = map[string]any{"WWW-Authenticate": map[string]any{"schema": str(`Bearer realm="sessiond"`)}}
				case http.StatusServiceUnavailable:
					e["headers"] = map[string]any{"Retry-After": map[string]any{"schema": integer("seconds (overloaded)")}}
				case http.StatusInternalServerError:
					e["description"] = "code internal: a fault of the server's, logged; the request may be retried"
				}
				resp[itoa(code)] = e
			}
			op["responses"] = resp
			if !rt.public {
				op["security"] = []any{map[string]any{"bearer": []any{}}}
			}
			paths[p][strings.ToLower(rt.method)] = op
		}
		doc := map[string]any{
			"openapi": "3.1.0",
			"info":    map[string]any{"title": "sessiond", "version": "1", "description": "Durable LLM agent sessions: see docs/api.md and docs/protocol.md."},
			"paths":   paths,
			"components": map[string]any{
				"schemas":         schemas,
				"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			},
		}
		openAPIJSON, _ = json.MarshalIndent(doc, "", "  ")
	})
	return openAPIJSON
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
