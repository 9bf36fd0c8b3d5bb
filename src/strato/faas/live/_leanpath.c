/* The lean backend's hot path in C: recognise a plain invocation, and split an instance's result.
 *
 * Why C: profiles of the gateway (docs/live.md, "The lean path") showed llhttp's Python callbacks and the
 * Request object they fill costing ~11 us of the ~58 us the gateway spent per warm invocation, and the
 * frame handling on the way back a few more. llhttp (through httptools) stays the parser of record: this
 * module only *recognises* a narrow, strict subset of HTTP/1.1 (one complete request, plain tokens and
 * visible-ASCII values, a single decimal Content-Length, no transfer codings, no upgrades, no Expect, no
 * obs-fold, no trailing whitespace) and leaves everything else to llhttp exactly as before. Anything it
 * accepts llhttp (as httptools builds it) accepts with the same method, target, fields and body
 * (tests/test_faas_live_leanpath.py checks this on generated and mutated input).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <sched.h>
#include <sys/socket.h>
#include <structmember.h>

#define FRAME_HEADER 13
#define KIND_RESULT 11

/* RFC 9110 tchar. */
static unsigned char TOKEN[256];
/* What the recogniser accepts in a request target after "/function/NAME": RFC 3986 pchar, "/" and "?"
 * ("#" never reaches a server; a fragment or anything else goes to llhttp). */
static unsigned char TARGET[256];
/* Function names as the registry allows them (lower-case letters, digits, "_", "-"). */
static unsigned char NAME[256];

static void init_tables(void) {
    const char *tchar = "!#$%&'*+-.^_`|~";
    const char *pchar = "-._~!$&'()*+,;=:@/?%";
    for (int c = '0'; c <= '9'; c++) TOKEN[c] = TARGET[c] = NAME[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) TOKEN[c] = TARGET[c] = NAME[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) TOKEN[c] = TARGET[c] = 1;
    for (const char *p = tchar; *p; p++) TOKEN[(unsigned char)*p] = 1;
    for (const char *p = pchar; *p; p++) TARGET[(unsigned char)*p] = 1;
    NAME['_'] = NAME['-'] = 1;
}

static int lower_equals(const char *s, Py_ssize_t n, const char *lower_literal) {
    Py_ssize_t m = (Py_ssize_t)strlen(lower_literal);
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != lower_literal[i]) return 0;
    }
    return 1;
}

static int has_prefix_lower(const char *s, Py_ssize_t n, const char *lower_literal) {
    Py_ssize_t m = (Py_ssize_t)strlen(lower_literal);
    return n >= m && lower_equals(s, m, lower_literal);
}

/* A growable byte buffer on the stack for the common case. */
typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char inline_data[2048];
} Buffer;

static void buffer_init(Buffer *b) {
    b->data = b->inline_data;
    b->size = 0;
    b->capacity = (Py_ssize_t)sizeof(b->inline_data);
}

static int buffer_put(Buffer *b, const char *s, Py_ssize_t n) {
    if (b->size + n > b->capacity) {
        Py_ssize_t capacity = 2 * (b->size + n);
        char *grown = PyMem_Malloc((size_t)capacity);
        if (grown == NULL) return -1;
        memcpy(grown, b->data, (size_t)b->size);
        if (b->data != b->inline_data) PyMem_Free(b->data);
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, s, (size_t)n);
    b->size += n;
    return 0;
}

static void buffer_free(Buffer *b) {
    if (b->data != b->inline_data) PyMem_Free(b->data);
}

static int put_lower(Buffer *b, const char *s, Py_ssize_t n) {
    char chunk[256];
    while (n > 0) {
        Py_ssize_t take = n < (Py_ssize_t)sizeof(chunk) ? n : (Py_ssize_t)sizeof(chunk);
        for (Py_ssize_t i = 0; i < take; i++) {
            char c = s[i];
            chunk[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        if (buffer_put(b, chunk, take) < 0) return -1;
        s += take;
        n -= take;
    }
    return 0;
}

static const char *METHODS[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", NULL};
static PyObject *METHOD_NAMES[7];
/* Attribute and method names used per invocation, made once. */
static PyObject *NAME_CLOSING, *NAME_TRANSPORT, *NAME_WRITE, *NAME_DATA_RECEIVED;

/* What the recogniser found in a request: spans into the caller's bytes. */
typedef struct {
    const char *name;
    Py_ssize_t name_len;
    const char *authorization; /* NULL: absent */
    Py_ssize_t authorization_len;
    const char *body;
    long long content_length;
    int keep_alive;
    PyObject *method; /* borrowed, interned */
} Recognised;

/* Recognise one complete plain invocation in s[0:n]; on success append to ``head`` what an instance
 * gets as an INVOKE's meta up to (not including) the Authorization and content-length lines:
 * "METHOD TARGET HTTP/1.1" and the fields to pass on (lower-case names, values as received; Host kept;
 * framing, Authorization and X-Strato-* fields left out), joined by CRLF, as dispatch.request_head
 * renders a request llhttp parsed. Returns 1 when recognised, 2 when the head is a plain invocation's but
 * the body has not all arrived (clients often send the two in separate writes), 0 when not (nothing to
 * report: the general path parses it and says what is wrong, if anything), -1 with an exception set. */
static int recognise(const char *s, Py_ssize_t n, Py_ssize_t max_head, Py_ssize_t max_body,
                     Py_ssize_t max_headers, Recognised *out, Buffer *head) {
    Py_ssize_t limit = n < max_head ? n : max_head;
    Py_ssize_t i = 0;

    const char *method = NULL;
    Py_ssize_t method_len = 0;
    out->method = NULL;
    for (int m = 0; METHODS[m] != NULL; m++) {
        Py_ssize_t len = (Py_ssize_t)strlen(METHODS[m]);
        if (len < limit && memcmp(s, METHODS[m], (size_t)len) == 0 && s[len] == ' ') {
            method = METHODS[m];
            out->method = METHOD_NAMES[m];
            method_len = len;
            break;
        }
    }
    if (method == NULL) return 0;
    i = method_len + 1;
    static const char prefix[] = "/function/";
    const Py_ssize_t prefix_len = (Py_ssize_t)sizeof(prefix) - 1;
    if (i + prefix_len > limit || memcmp(s + i, prefix, (size_t)prefix_len) != 0) return 0;
    Py_ssize_t name_start = i + prefix_len;
    Py_ssize_t j = name_start;
    while (j < limit && NAME[(unsigned char)s[j]]) j++;
    Py_ssize_t name_len = j - name_start;
    if (name_len == 0 || name_len > 63) return 0;
    Py_ssize_t rest_start = j; /* "/..." or "?..." or " " */
    while (j < limit && TARGET[(unsigned char)s[j]]) j++;
    Py_ssize_t target_end = j;
    if (rest_start < target_end && s[rest_start] != '/' && s[rest_start] != '?') return 0;
    /* An empty query ("...?") is dropped by the general path: left to it. */
    if (target_end > rest_start && s[target_end - 1] == '?') return 0;
    static const char version[] = " HTTP/1.1\r\n";
    const Py_ssize_t version_len = (Py_ssize_t)sizeof(version) - 1;
    if (j + version_len > limit || memcmp(s + j, version, (size_t)version_len) != 0) return 0;
    i = j + version_len;

    /* The target as the function sees it: "/" + the path after the name + "?" + the query. */
    if (buffer_put(head, method, method_len) < 0 || buffer_put(head, " ", 1) < 0) goto fail;
    if (rest_start == target_end || s[rest_start] == '?') {
        if (buffer_put(head, "/", 1) < 0) goto fail;
    }
    if (buffer_put(head, s + rest_start, target_end - rest_start) < 0) goto fail;
    if (buffer_put(head, " HTTP/1.1", 9) < 0) goto fail;

    int hosts = 0, lengths = 0, authorizations = 0, fields = 0;
    out->keep_alive = 1;
    out->content_length = 0;
    out->authorization = NULL;
    out->authorization_len = 0;
    for (;;) {
        if (i + 2 > limit) return 0;
        if (s[i] == '\r' && s[i + 1] == '\n') {
            i += 2;
            break;
        }
        Py_ssize_t field_start = i;
        while (i < limit && TOKEN[(unsigned char)s[i]]) i++;
        Py_ssize_t field_len = i - field_start;
        if (field_len == 0 || i >= limit || s[i] != ':') return 0;
        i++;
        while (i < limit && (s[i] == ' ' || s[i] == '\t')) i++;
        Py_ssize_t value_start = i;
        while (i < limit && (((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] <= 0x7e) || s[i] == '\t')) i++;
        Py_ssize_t value_len = i - value_start;
        if (i + 1 >= limit || s[i] != '\r' || s[i + 1] != '\n') return 0;
        i += 2;
        /* No trailing whitespace: llhttp keeps it, and leaving such values to it avoids any doubt. */
        if (value_len > 0 && (s[value_start + value_len - 1] == ' ' || s[value_start + value_len - 1] == '\t'))
            return 0;
        if (++fields > max_headers) return 0;
        const char *name = s + field_start;
        const char *value = s + value_start;
        if (lower_equals(name, field_len, "host")) {
            if (++hosts > 1) return 0;
        } else if (lower_equals(name, field_len, "content-length")) {
            if (++lengths > 1 || value_len == 0 || value_len > 15) return 0;
            if (value_len > 1 && value[0] == '0') return 0;
            long long length = 0;
            for (Py_ssize_t k = 0; k < value_len; k++) {
                if (value[k] < '0' || value[k] > '9') return 0;
                length = length * 10 + (value[k] - '0');
            }
            if (length > max_body) return 0;
            out->content_length = length;
            continue;
        } else if (lower_equals(name, field_len, "authorization")) {
            if (++authorizations > 1) return 0;
            out->authorization = value;
            out->authorization_len = value_len;
            continue;
        } else if (lower_equals(name, field_len, "connection")) {
            if (lower_equals(value, value_len, "close")) out->keep_alive = 0;
            else if (!lower_equals(value, value_len, "keep-alive")) return 0;
            continue;
        } else if (lower_equals(name, field_len, "transfer-encoding") || lower_equals(name, field_len, "upgrade") ||
                   lower_equals(name, field_len, "expect") || lower_equals(name, field_len, "te") ||
                   lower_equals(name, field_len, "trailer") || lower_equals(name, field_len, "keep-alive") ||
                   lower_equals(name, field_len, "proxy-connection")) {
            return 0;
        } else if (has_prefix_lower(name, field_len, "x-strato-")) {
            continue;
        }
        if (buffer_put(head, "\r\n", 2) < 0 || put_lower(head, name, field_len) < 0 ||
            buffer_put(head, ": ", 2) < 0 || buffer_put(head, value, value_len) < 0)
            goto fail;
    }
    if (hosts != 1) return 0;
    if (n - i > out->content_length) return 0; /* a pipelined request behind it: llhttp's */
    if (n - i < out->content_length) return 2; /* the rest of the body is still on its way */
    out->name = s + name_start;
    out->name_len = name_len;
    out->body = s + i;
    return 1;
fail:
    PyErr_NoMemory();
    return -1;
}

/* The last lines of an INVOKE's meta: Authorization when it is passed on, and the body's length. */
static int finish_head(Buffer *head, const Recognised *r, int pass_authorization) {
    if (pass_authorization) {
        if (buffer_put(head, "\r\nauthorization: ", 17) < 0 ||
            buffer_put(head, r->authorization, r->authorization_len) < 0)
            return -1;
    }
    char line[40];
    int len = snprintf(line, sizeof(line), "\r\ncontent-length: %lld", r->content_length);
    return buffer_put(head, line, len);
}

/* parse_invocation(data, max_head, max_body, max_headers)
 *   -> None, or (name: str, head: bytes, body: bytes, authorization: bytes | None, keep_alive: bool,
 *               method: str)
 * The recogniser on its own (tests compare it with llhttp); ``head`` leaves Authorization out. */
static PyObject *parse_invocation(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_invocation(data: bytes, max_head, max_body, max_headers)");
        return NULL;
    }
    Py_ssize_t max_head = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_body = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_headers = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) return NULL;
    Buffer head;
    buffer_init(&head);
    Recognised r;
    int found = recognise(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), max_head, max_body,
                          max_headers, &r, &head);
    if (found != 1 || finish_head(&head, &r, 0) < 0) {
        buffer_free(&head);
        if (found < 0 || PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    PyObject *name_obj = PyUnicode_DecodeASCII(r.name, r.name_len, NULL);
    PyObject *head_obj = PyBytes_FromStringAndSize(head.data, head.size);
    PyObject *body_obj = PyBytes_FromStringAndSize(r.body, (Py_ssize_t)r.content_length);
    PyObject *auth_obj = r.authorization != NULL ? PyBytes_FromStringAndSize(r.authorization, r.authorization_len)
                                                 : Py_NewRef(Py_None);
    if (name_obj != NULL && head_obj != NULL && body_obj != NULL && auth_obj != NULL)
        result = PyTuple_Pack(6, name_obj, head_obj, body_obj, auth_obj, r.keep_alive ? Py_True : Py_False,
                              r.method);
    Py_XDECREF(name_obj);
    Py_XDECREF(head_obj);
    Py_XDECREF(body_obj);
    Py_XDECREF(auth_obj);
    buffer_free(&head);
    return result;
}

static unsigned int read_u32(const unsigned char *p) {
    return ((unsigned int)p[0] << 24) | ((unsigned int)p[1] << 16) | ((unsigned int)p[2] << 8) | (unsigned int)p[3];
}

/* Whether s[0:n] is exactly one RESULT frame for ``request_id`` within the size limits (its meta and body
 * lengths through the last two arguments): what both readers of instance output below pass on. */
static int whole_result(const unsigned char *s, Py_ssize_t n, unsigned long request_id, Py_ssize_t max_meta,
                        Py_ssize_t max_body, Py_ssize_t *meta_len, Py_ssize_t *body_len) {
    if (n < FRAME_HEADER || read_u32(s) != request_id || s[4] != KIND_RESULT) return 0;
    *meta_len = (Py_ssize_t)read_u32(s + 5);
    *body_len = (Py_ssize_t)read_u32(s + 9);
    return *meta_len <= max_meta && *body_len <= max_body && n == FRAME_HEADER + *meta_len + *body_len;
}

/* split_result(data, request_id, max_meta, max_body) -> None, or (meta: bytes, body: bytes)
 *
 * ``data`` is exactly one complete RESULT frame for ``request_id`` whose sizes are within the limits; for
 * anything else (a partial or oversized frame, another kind, more bytes behind it) None, and the caller's
 * general frame reader takes the bytes, checks them and says what was wrong.
 */
static PyObject *split_result(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "split_result(data: bytes, request_id, max_meta, max_body)");
        return NULL;
    }
    unsigned long request_id = PyLong_AsUnsignedLong(args[1]);
    Py_ssize_t max_meta = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_body = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) return NULL;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t meta_len, body_len;
    if (!whole_result(s, PyBytes_GET_SIZE(args[0]), request_id, max_meta, max_body, &meta_len, &body_len))
        Py_RETURN_NONE;
    PyObject *meta = PyBytes_FromStringAndSize((const char *)s + FRAME_HEADER, meta_len);
    PyObject *body = PyBytes_FromStringAndSize((const char *)s + FRAME_HEADER + meta_len, body_len);
    PyObject *result = NULL;
    if (meta != NULL && body != NULL) result = PyTuple_Pack(2, meta, body);
    Py_XDECREF(meta);
    Py_XDECREF(body);
    return result;
}

/* ---- the lane: warm invocations dispatched and answered without Python's per-request parsing ---- */

/* Lane ids have the top bit set: the Python channel numbers its own requests from 1 on the same socket. */
#define LANE_ID_BIT 0x80000000UL
#define KIND_INVOKE 1
#define MAX_META 65536

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of Python's time.perf_counter() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put_u32(char *p, unsigned long v) {
    p[0] = (char)((v >> 24) & 0xff);
    p[1] = (char)((v >> 16) & 0xff);
    p[2] = (char)((v >> 8) & 0xff);
    p[3] = (char)(v & 0xff);
}

typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *dispatched; /* callable(slot): the node's bookkeeping for an invocation the lane sent */
    PyObject *idle;  /* list of Slot: lent instances, the last released on top */
} RouteObject;

typedef struct {
    PyObject_HEAD
    RouteObject *route;
    PyObject *instance;
    PyObject *transport;
    PyObject *lane;
    int lent;   /* the lane may dispatch to it */
    int listed; /* it is in route->idle (at most once) */
    int busy;   /* a lane invocation is in flight on it */
    unsigned long request_id;
    PyObject *client;
    PyObject *method;
    int keep_alive;
    double started;
    PyObject *cached_meta;
    PyObject *cached_head;
    int cached_status;
    Py_ssize_t max_body;
    int fd;             /* the instance's socket, to poll for its answer (see Lane_spin) */
    PyObject *protocol; /* the channel uvloop hands that socket's bytes to */
} SlotObject;

typedef struct {
    PyObject_HEAD
    PyObject *routes;
    PyObject *finish; /* callable(slot, status, client, keep_alive) */
    PyObject *bearer; /* callable(bytes) -> bool, or None */
    int protect;
    Py_ssize_t max_head;
    Py_ssize_t max_body;
    Py_ssize_t max_headers;
    unsigned long next_id;
    Py_ssize_t inflight;
    double spin_s;
    double concurrency; /* invocations in flight at each dispatch, smoothed */
} LaneObject;

static PyTypeObject RouteType;
static PyTypeObject SlotType;
static PyTypeObject LaneType;

/* Route(name, dispatched) */
static int Route_init(RouteObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"name", "dispatched", NULL};
    PyObject *name, *dispatched;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UO", keywords, &name, &dispatched)) return -1;
    PyObject *idle = PyList_New(0);
    if (idle == NULL) return -1;
    Py_XSETREF(self->name, Py_NewRef(name));
    Py_XSETREF(self->dispatched, Py_NewRef(dispatched));
    Py_XSETREF(self->idle, idle);
    return 0;
}

static int Route_traverse(RouteObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->name);
    Py_VISIT(self->dispatched);
    Py_VISIT(self->idle);
    return 0;
}

static int Route_clear(RouteObject *self) {
    Py_CLEAR(self->name);
    Py_CLEAR(self->dispatched);
    Py_CLEAR(self->idle);
    return 0;
}

static void Route_dealloc(RouteObject *self) {
    PyObject_GC_UnTrack(self);
    Route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Route_idle_count(RouteObject *self, PyObject *unused) {
    (void)unused;
    Py_ssize_t count = 0;
    if (self->idle == NULL) return PyLong_FromLong(0);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(self->idle); k++) {
        SlotObject *slot = (SlotObject *)PyList_GET_ITEM(self->idle, k);
        count += slot->lent && !slot->busy;
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef Route_methods[] = {
    {"idle_count", (PyCFunction)Route_idle_count, METH_NOARGS, "Instances the lane may dispatch to now."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Route_members[] = {
    {"name", T_OBJECT, offsetof(RouteObject, name), READONLY, "The function's name."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "strato.faas.live._leanpath.Route",
    .tp_doc = "A function the lane serves: its lent idle instances and the node's dispatch hook.",
    .tp_basicsize = sizeof(RouteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_traverse = (traverseproc)Route_traverse,
    .tp_clear = (inquiry)Route_clear,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_methods = Route_methods,
    .tp_members = Route_members,
};

/* Slot(route, instance, transport, max_body) */
static int Slot_init(SlotObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"route", "instance", "transport", "max_body", "fd", "protocol", NULL};
    PyObject *route, *instance, *transport, *protocol = Py_None;
    Py_ssize_t max_body;
    int fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOn|iO", keywords, &RouteType, &route, &instance, &transport,
                                     &max_body, &fd, &protocol))
        return -1;
    self->fd = fd;
    Py_XSETREF(self->protocol, Py_NewRef(protocol));
    Py_XSETREF(self->route, (RouteObject *)Py_NewRef(route));
    Py_XSETREF(self->instance, Py_NewRef(instance));
    Py_XSETREF(self->transport, Py_NewRef(transport));
    self->max_body = max_body;
    return 0;
}

static void Slot_drop_request(SlotObject *self) {
    if (self->busy && self->lane != NULL) ((LaneObject *)self->lane)->inflight--;
    self->busy = 0;
    Py_CLEAR(self->client);
    Py_CLEAR(self->method);
    Py_CLEAR(self->lane);
}

static int Slot_traverse(SlotObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->route);
    Py_VISIT(self->instance);
    Py_VISIT(self->transport);
    Py_VISIT(self->lane);
    Py_VISIT(self->client);
    Py_VISIT(self->method);
    Py_VISIT(self->cached_meta);
    Py_VISIT(self->cached_head);
    Py_VISIT(self->protocol);
    return 0;
}

static int Slot_clear(SlotObject *self) {
    Py_CLEAR(self->route);
    Py_CLEAR(self->instance);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->lane);
    Py_CLEAR(self->client);
    Py_CLEAR(self->method);
    Py_CLEAR(self->cached_meta);
    Py_CLEAR(self->cached_head);
    Py_CLEAR(self->protocol);
    return 0;
}

static void Slot_dealloc(SlotObject *self) {
    PyObject_GC_UnTrack(self);
    Slot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Slot_lend(SlotObject *self, PyObject *unused) {
    (void)unused;
    if (self->busy || self->route == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a slot with a lane invocation in flight cannot be lent");
        return NULL;
    }
    self->lent = 1;
    if (!self->listed) {
        if (PyList_Append(self->route->idle, (PyObject *)self) < 0) return NULL;
        self->listed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Slot_reclaim(SlotObject *self, PyObject *unused) {
    (void)unused;
    self->lent = 0;
    /* Out of the route's list now (a stopped instance is not kept alive by it; the list is short). */
    if (self->listed && self->route != NULL && self->route->idle != NULL) {
        PyObject *idle = self->route->idle;
        for (Py_ssize_t k = PyList_GET_SIZE(idle) - 1; k >= 0; k--) {
            if (PyList_GET_ITEM(idle, k) == (PyObject *)self) {
                if (PyList_SetSlice(idle, k, k + 1, NULL) < 0) return NULL;
                break;
            }
        }
        self->listed = 0;
    }
    Py_RETURN_NONE;
}

/* cache(meta, head, status): a checked result head for this instance's usual result meta. */
static PyObject *Slot_cache(SlotObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "cache(meta: bytes, head: bytes, status: int)");
        return NULL;
    }
    int status = (int)PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_XSETREF(self->cached_meta, Py_NewRef(args[0]));
    Py_XSETREF(self->cached_head, Py_NewRef(args[1]));
    self->cached_status = status;
    Py_RETURN_NONE;
}

/* demote() -> (request_id, client, keep_alive, method, started), or None when nothing is in flight: the
 * lane's invocation leaves the lane, for the general path to finish (any result the lane cannot pass
 * through as it is, the instance's death, a timeout). */
static PyObject *Slot_demote(SlotObject *self, PyObject *unused) {
    (void)unused;
    if (!self->busy) Py_RETURN_NONE;
    PyObject *result = Py_BuildValue("(kOOOd)", self->request_id, self->client, self->keep_alive ? Py_True : Py_False,
                                     self->method, self->started);
    if (result == NULL) return NULL;
    Slot_drop_request(self);
    return result;
}

/* complete(data) -> bool: ``data`` is this slot's whole result frame, small enough to pass inline, with
 * the status and header lines checked before: the response goes to the client and the lane's finish
 * hook runs. False: nothing was done; the caller demotes the invocation and reads ``data`` itself. */
static PyObject *Slot_complete(SlotObject *self, PyObject *data) {
    if (!self->busy || !PyBytes_Check(data) || self->cached_meta == NULL) Py_RETURN_FALSE;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t meta_len, body_len;
    if (!whole_result(s, PyBytes_GET_SIZE(data), self->request_id, MAX_META, self->max_body, &meta_len, &body_len))
        Py_RETURN_FALSE;
    if (meta_len != PyBytes_GET_SIZE(self->cached_meta) ||
        memcmp(PyBytes_AS_STRING(self->cached_meta), s + FRAME_HEADER, (size_t)meta_len) != 0)
        Py_RETURN_FALSE;

    /* A connection the server is closing (a graceful shutdown) says so in its last response. */
    int keep_alive = self->keep_alive;
    if (keep_alive) {
        PyObject *closing = PyObject_GetAttr(self->client, NAME_CLOSING);
        if (closing == NULL) PyErr_Clear();
        else if (PyObject_IsTrue(closing) == 1) keep_alive = 0;
        Py_XDECREF(closing);
        PyErr_Clear();
    }
    Py_ssize_t head_len = PyBytes_GET_SIZE(self->cached_head);
    char framing[64];
    int framing_len = snprintf(framing, sizeof(framing), "Content-Length: %zd\r\n%s\r\n", body_len,
                               keep_alive ? "" : "Connection: close\r\n");
    PyObject *response = PyBytes_FromStringAndSize(NULL, head_len + framing_len + body_len);
    if (response == NULL) return NULL;
    char *out = PyBytes_AS_STRING(response);
    memcpy(out, PyBytes_AS_STRING(self->cached_head), (size_t)head_len);
    memcpy(out + head_len, framing, (size_t)framing_len);
    memcpy(out + head_len + framing_len, s + FRAME_HEADER + meta_len, (size_t)body_len);

    PyObject *client = self->client, *lane = self->lane;
    ((LaneObject *)lane)->inflight--;
    self->client = NULL;
    self->lane = NULL;
    Py_CLEAR(self->method);
    self->busy = 0;

    /* The node's bookkeeping runs whatever happens to the write (a failed write closes the client's
     * transport, which says so itself): the invocation has ended either way. */
    PyObject *transport = PyObject_GetAttr(client, NAME_TRANSPORT);
    if (transport == NULL) {
        PyErr_Clear();
    } else {
        if (transport != Py_None) {
            PyObject *written = PyObject_CallMethodOneArg(transport, NAME_WRITE, response);
            if (written == NULL) PyErr_Clear();
            Py_XDECREF(written);
        }
        Py_DECREF(transport);
    }
    Py_DECREF(response);
    PyObject *status = PyLong_FromLong(self->cached_status);
    PyObject *done = NULL;
    if (status != NULL) {
        PyObject *hook_args[4] = {(PyObject *)self, status, client, keep_alive ? Py_True : Py_False};
        done = PyObject_Vectorcall(((LaneObject *)lane)->finish, hook_args, 4, NULL);
        Py_DECREF(status);
    }
    Py_DECREF(client);
    Py_DECREF(lane);
    if (done == NULL) return NULL;
    Py_DECREF(done);
    Py_RETURN_TRUE;
}

static PyMethodDef Slot_methods[] = {
    {"lend", (PyCFunction)Slot_lend, METH_NOARGS, "Let the lane dispatch to this idle instance."},
    {"reclaim", (PyCFunction)Slot_reclaim, METH_NOARGS, "Stop the lane from dispatching to it."},
    {"cache", (PyCFunction)(void (*)(void))Slot_cache, METH_FASTCALL, "cache(meta, head, status)"},
    {"demote", (PyCFunction)Slot_demote, METH_NOARGS, "demote() -> (request_id, client, keep_alive, method, started) | None"},
    {"complete", (PyCFunction)Slot_complete, METH_O, "complete(data) -> bool"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Slot_members[] = {
    {"instance", T_OBJECT, offsetof(SlotObject, instance), READONLY, "The node's instance."},
    {"started", T_DOUBLE, offsetof(SlotObject, started), READONLY, "perf_counter() at the arrival."},
    {"busy", T_INT, offsetof(SlotObject, busy), READONLY, "A lane invocation is in flight."},
    {"lent", T_INT, offsetof(SlotObject, lent), READONLY, "The lane may dispatch to it."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "strato.faas.live._leanpath.Slot",
    .tp_doc = "One lean instance as the lane sees it: lent or not, and the invocation in flight.",
    .tp_basicsize = sizeof(SlotObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Slot_init,
    .tp_traverse = (traverseproc)Slot_traverse,
    .tp_clear = (inquiry)Slot_clear,
    .tp_dealloc = (destructor)Slot_dealloc,
    .tp_methods = Slot_methods,
    .tp_members = Slot_members,
};

/* Lane(routes, finish, bearer, protect, max_head, max_body, max_headers) */
static int Lane_init(LaneObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"routes",   "finish",      "bearer", "protect", "max_head",
                               "max_body", "max_headers", "spin_s", NULL};
    PyObject *routes, *finish, *bearer;
    int protect;
    double spin_s = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOpnnn|d", keywords, &PyDict_Type, &routes, &finish, &bearer,
                                     &protect, &self->max_head, &self->max_body, &self->max_headers, &spin_s))
        return -1;
    self->spin_s = spin_s;
    Py_XSETREF(self->routes, Py_NewRef(routes));
    Py_XSETREF(self->finish, Py_NewRef(finish));
    Py_XSETREF(self->bearer, Py_NewRef(bearer));
    self->protect = protect;
    return 0;
}

static int Lane_traverse(LaneObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->routes);
    Py_VISIT(self->finish);
    Py_VISIT(self->bearer);
    return 0;
}

static int Lane_clear(LaneObject *self) {
    Py_CLEAR(self->routes);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->bearer);
    return 0;
}

static void Lane_dealloc(LaneObject *self) {
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* With one invocation in flight and nothing else to do, wait for the instance's answer by polling its
 * socket for a few tens of microseconds instead of sleeping in epoll: at low load the two wake-ups of a
 * sleeping gateway (an interrupt to an idle CPU, on a VM an exit too) are most of what its extra hop
 * costs (docs/live.md). What arrives goes to the channel exactly as uvloop would have handed it. */
static int Lane_spin(LaneObject *self, SlotObject *slot) {
    /* Only when the lane has been serving one invocation at a time: under load, other clients' requests
     * are waiting to be read, and polling would hold them up. */
    if (self->spin_s <= 0.0 || self->inflight != 1 || self->concurrency > 1.5 || slot->fd < 0 ||
        slot->protocol == Py_None)
        return 0;
    double started = monotonic_now(), deadline = started + self->spin_s;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(slot->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            PyObject *data = PyBytes_FromStringAndSize(buf, n);
            if (data == NULL) return -1;
            PyObject *done = PyObject_CallMethodOneArg(slot->protocol, NAME_DATA_RECEIVED, data);
            Py_DECREF(data);
            if (done == NULL) return -1;
            Py_DECREF(done);
            return 0;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return 0; /* uvloop's */
        double now = monotonic_now();
        if (!slot->busy || now > deadline) return 0;
        /* An instance that answers in time answers within the first ~20 us. Past that it may be waiting
         * for this very CPU (woken on it): give it the CPU instead of spinning in its way. */
        if (now > started + 20e-6) sched_yield();
    }
}

/* serve(client, data) -> int: 1 when ``data`` was one plain invocation of a function with an idle instance
 * the node lent the lane, sent to the instance (then the node is told); 2 when it is the start of a plain invocation
 * whose body has not all arrived (nothing was changed: call again with more); 0 when the general path must
 * parse it (nothing was changed). */
static PyObject *Lane_serve(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "serve(client, data: bytes)");
        return NULL;
    }
    PyObject *client = args[0], *data = args[1];
    if (self->routes == NULL || self->finish == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Lane was not initialised");
        return NULL;
    }
    Buffer frame;
    buffer_init(&frame);
    static const char zeros[FRAME_HEADER] = {0};
    if (buffer_put(&frame, zeros, FRAME_HEADER) < 0) return PyErr_NoMemory();
    Recognised r;
    int found = recognise(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), self->max_head, self->max_body,
                          self->max_headers, &r, &frame);
    if (found != 1) {
        buffer_free(&frame);
        if (found < 0) return NULL;
        return PyLong_FromLong(found);
    }
    int own_token = 0;
    if (r.authorization != NULL && self->bearer != Py_None) {
        PyObject *given = PyBytes_FromStringAndSize(r.authorization, r.authorization_len);
        PyObject *verdict = given != NULL ? PyObject_CallOneArg(self->bearer, given) : NULL;
        Py_XDECREF(given);
        own_token = verdict != NULL ? PyObject_IsTrue(verdict) : -1;
        Py_XDECREF(verdict);
        if (own_token < 0) {
            buffer_free(&frame);
            return NULL;
        }
    }
    if (self->protect && !own_token) {
        buffer_free(&frame);
        return PyLong_FromLong(0); /* the general path answers 401 */
    }
    PyObject *name = PyUnicode_DecodeASCII(r.name, r.name_len, NULL);
    if (name == NULL) {
        buffer_free(&frame);
        return NULL;
    }
    RouteObject *route = (RouteObject *)PyDict_GetItemWithError(self->routes, name);
    Py_DECREF(name);
    if (route == NULL || !PyObject_TypeCheck((PyObject *)route, &RouteType)) {
        buffer_free(&frame);
        if (PyErr_Occurred()) return NULL;
        return PyLong_FromLong(0);
    }
    if (route->idle == NULL || route->dispatched == NULL) {
        buffer_free(&frame);
        PyErr_SetString(PyExc_RuntimeError, "Route was not initialised");
        return NULL;
    }
    Py_INCREF(route);
    SlotObject *slot = NULL;
    while (PyList_GET_SIZE(route->idle) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(route->idle) - 1;
        SlotObject *candidate = (SlotObject *)Py_NewRef(PyList_GET_ITEM(route->idle, last));
        if (PyList_SetSlice(route->idle, last, last + 1, NULL) < 0) {
            Py_DECREF(candidate);
            Py_DECREF(route);
            buffer_free(&frame);
            return NULL;
        }
        candidate->listed = 0;
        if (candidate->lent && !candidate->busy) {
            slot = candidate;
            break;
        }
        Py_DECREF(candidate);
    }
    if (slot == NULL) {
        Py_DECREF(route);
        buffer_free(&frame);
        return PyLong_FromLong(0); /* no idle instance: the general path starts one or queues */
    }
    slot->lent = 0;
    if (finish_head(&frame, &r, r.authorization != NULL && !own_token) < 0 ||
        buffer_put(&frame, r.body, (Py_ssize_t)r.content_length) < 0) {
        /* Out of memory: the general path takes this request and the instance, and lends it again after. */
        Py_DECREF(slot);
        Py_DECREF(route);
        buffer_free(&frame);
        return PyErr_NoMemory();
    }
    unsigned long request_id = LANE_ID_BIT | (self->next_id++ & 0x7fffffffUL);
    Py_ssize_t meta_len = frame.size - FRAME_HEADER - (Py_ssize_t)r.content_length;
    put_u32(frame.data, request_id);
    frame.data[4] = KIND_INVOKE;
    put_u32(frame.data + 5, (unsigned long)meta_len);
    put_u32(frame.data + 9, (unsigned long)r.content_length);
    PyObject *bytes = PyBytes_FromStringAndSize(frame.data, frame.size);
    buffer_free(&frame);
    if (bytes == NULL) {
        Py_DECREF(slot);
        Py_DECREF(route);
        return NULL;
    }
    slot->busy = 1;
    slot->request_id = request_id;
    slot->keep_alive = r.keep_alive;
    slot->started = monotonic_now();
    Py_XSETREF(slot->client, Py_NewRef(client));
    Py_XSETREF(slot->method, Py_NewRef(r.method));
    Py_XSETREF(slot->lane, Py_NewRef((PyObject *)self));
    PyObject *written = PyObject_CallMethodOneArg(slot->transport, NAME_WRITE, bytes);
    Py_DECREF(bytes);
    /* A transport that failed to write closes, and the invocation fails through the channel's
     * connection_lost (or its timeout): it is in flight either way. */
    if (written == NULL) PyErr_Clear();
    Py_XDECREF(written);
    /* The node's bookkeeping after the write, off the request's way to the instance: nothing can run
     * in between (one thread), and a lent instance is one the node would give this invocation. */
    self->inflight++;
    self->concurrency = 0.9 * self->concurrency + 0.1 * (double)self->inflight;
    PyObject *noted = PyObject_CallOneArg(route->dispatched, (PyObject *)slot);
    Py_DECREF(route);
    if (noted == NULL) {
        Py_DECREF(slot);
        return NULL;
    }
    Py_DECREF(noted);
    int spun = Lane_spin(self, slot);
    Py_DECREF(slot);
    if (spun < 0) return NULL;
    return PyLong_FromLong(1);
}

static PyMethodDef Lane_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))Lane_serve, METH_FASTCALL, "serve(client, data) -> 0, 1 or 2"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "strato.faas.live._leanpath.Lane",
    .tp_doc = "The gateway's fast path for plain warm invocations on the lean backend.",
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
};

static PyMethodDef methods[] = {
    {"parse_invocation", (PyCFunction)(void (*)(void))parse_invocation, METH_FASTCALL,
     "parse_invocation(data, max_head, max_body, max_headers) -> (name, head, body, authorization, "
     "keep_alive, method) for one complete plain invocation request, else None."},
    {"split_result", (PyCFunction)(void (*)(void))split_result, METH_FASTCALL,
     "split_result(data, request_id, max_meta, max_body) -> (meta, body) for exactly one complete RESULT "
     "frame, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_leanpath", "The lean backend's hot path in C (see the source's header).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__leanpath(void) {
    init_tables();
    for (int m = 0; METHODS[m] != NULL; m++) {
        METHOD_NAMES[m] = PyUnicode_InternFromString(METHODS[m]);
        if (METHOD_NAMES[m] == NULL) return NULL;
    }
    NAME_CLOSING = PyUnicode_InternFromString("closing");
    NAME_TRANSPORT = PyUnicode_InternFromString("transport");
    NAME_WRITE = PyUnicode_InternFromString("write");
    NAME_DATA_RECEIVED = PyUnicode_InternFromString("data_received");
    if (NAME_CLOSING == NULL || NAME_TRANSPORT == NULL || NAME_WRITE == NULL || NAME_DATA_RECEIVED == NULL)
        return NULL;
    if (PyType_Ready(&RouteType) < 0 || PyType_Ready(&SlotType) < 0 || PyType_Ready(&LaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Route", (PyObject *)&RouteType) < 0 ||
        PyModule_AddObjectRef(m, "Slot", (PyObject *)&SlotType) < 0 ||
        PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
