/* The optional compiled fast path of loopguard_core.signatures: the loose canonical text of plain arguments.
 *
 * loose_json(value, prefix=b"") returns prefix + the UTF-8 bytes of canonical_text(value) (loose) for a value
 * made only of exact dicts with str keys, lists, tuples, str, int, float, bool and None, within the walk's depth
 * and node limits; it returns None for anything else, and the pure-Python encoders then write the text. It is
 * the C form of signatures._plain and must write the very same text: tests/core/test_signatures.py checks the
 * two against each other on generated values, and the real-trace corpora are scored with and without it.
 *
 * Only printable ASCII strings are folded here (strip, lower case, one space per run of spaces); every other
 * string is folded and quoted by the Python functions given to configure(), so the Unicode rules stay written
 * once, in Python. The GIL is held throughout; nothing is shared between calls but the configuration.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define NOT_PLAIN 1 /* not a value this walk writes: the caller returns None */

#ifndef LG_SOURCE_DIGEST /* set by hatch_build.py: signatures.py refuses a module built from other source */
#define LG_SOURCE_DIGEST ""
#endif

static PyObject *fold_fn = NULL;  /* signatures._fold_loose */
static PyObject *quote_fn = NULL; /* json.encoder.encode_basestring */
static int max_depth = 0;
static Py_ssize_t max_nodes = 0;
static Py_ssize_t hash_above = 0;

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (n == 0) {
        return 0;
    }
    if (buf_grow(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

/* A str's UTF-8 (fails on lone surrogates: not plain here). Not PyUnicode_AsUTF8AndSize: that keeps a UTF-8 copy
 * inside the str for its lifetime, and a folded string may be one the fold cache keeps. */
static int buf_put_str(Buf *b, PyObject *text) {
    if (PyUnicode_IS_ASCII(text)) {
        return buf_put(b, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
    }
    PyObject *utf8 = PyUnicode_AsUTF8String(text);
    if (utf8 == NULL) {
        return -1;
    }
    int rc = buf_put(b, PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8));
    Py_DECREF(utf8);
    return rc;
}

/* Whether s is printable ASCII only (and short enough to be folded, not hashed): folded here. */
static int simple_text(PyObject *s) {
    if (!PyUnicode_IS_ASCII(s) || PyUnicode_GET_LENGTH(s) > hash_above) {
        return 0;
    }
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* " ".join(s.strip().casefold().split()) for printable ASCII, JSON-escaped when quoted. */
static int put_folded(Buf *b, PyObject *s, int quoted) {
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t start = 0, end = PyUnicode_GET_LENGTH(s);
    while (start < end && p[start] == ' ') {
        start++;
    }
    while (end > start && p[end - 1] == ' ') {
        end--;
    }
    if (buf_grow(b, 2 * (end - start) + 2) < 0) {
        return -1;
    }
    char *out = b->data + b->len;
    if (quoted) {
        *out++ = '"';
    }
    int space = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        unsigned char c = p[i];
        if (c == ' ') {
            if (!space) {
                *out++ = ' ';
            }
            space = 1;
            continue;
        }
        space = 0;
        if (c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        } else if (quoted && (c == '"' || c == '\\')) {
            *out++ = '\\';
        }
        *out++ = (char)c;
    }
    if (quoted) {
        *out++ = '"';
    }
    b->len = out - b->data;
    return 0;
}

/* Any other string: folded, then quoted, by the Python functions. raw (when not NULL) gets the folded text. */
static int put_text_python(Buf *b, PyObject *s, Buf *raw) {
    PyObject *folded = PyObject_CallOneArg(fold_fn, s);
    if (folded == NULL) {
        return -1;
    }
    int rc = 0;
    if (raw != NULL) {
        rc = buf_put_str(raw, folded);
    }
    if (rc == 0) {
        PyObject *quoted = PyObject_CallOneArg(quote_fn, folded);
        rc = quoted == NULL ? -1 : buf_put_str(b, quoted);
        Py_XDECREF(quoted);
    }
    Py_DECREF(folded);
    return rc;
}

static int put_long_long(Buf *b, long long v) { /* decimal, as int.__repr__ writes it (snprintf is slower) */
    char digits[24];
    char *end = digits + sizeof digits, *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        *--p = '-';
    }
    return buf_put(b, p, end - p);
}

static int put_int(Buf *b, PyObject *v) {
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (small == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!overflow) {
        return put_long_long(b, small);
    }
    PyObject *text = PyLong_Type.tp_repr(v); /* ValueError past int-to-str's digit limit: the walk writes hex */
    if (text == NULL) {
        return -1;
    }
    int rc = buf_put_str(b, text);
    Py_DECREF(text);
    return rc;
}

static int put_float(Buf *b, double d) {
    if (isnan(d)) {
        return buf_put(b, "NaN", 3);
    }
    if (isinf(d)) {
        return d > 0 ? buf_put(b, "Infinity", 8) : buf_put(b, "-Infinity", 9);
    }
    if (d == floor(d)) { /* 1 == 1.0: written as the int */
        if (fabs(d) < 9.0e18) {
            return put_long_long(b, (long long)d);
        }
        PyObject *whole = PyLong_FromDouble(d);
        if (whole == NULL) {
            return -1;
        }
        PyObject *text = PyObject_Str(whole);
        Py_DECREF(whole);
        if (text == NULL) {
            return -1;
        }
        int rc = buf_put_str(b, text);
        Py_DECREF(text);
        return rc;
    }
    char *text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL); /* float.__repr__ */
    if (text == NULL) {
        return -1;
    }
    int rc = buf_put(b, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return rc;
}

static int put_value(Buf *b, PyObject *v, int depth, Py_ssize_t *budget);

typedef struct {
    Py_ssize_t key;   /* offset of the folded key in the keys buffer */
    Py_ssize_t key_n; /* its length */
    Py_ssize_t item;  /* offset of '"key":value' in the output */
    Py_ssize_t item_n;
} Entry;

static int bytes_cmp(const char *a, Py_ssize_t an, const char *b, Py_ssize_t bn) {
    Py_ssize_t common = an < bn ? an : bn;
    int c = common > 0 ? memcmp(a, b, (size_t)common) : 0;
    return c != 0 ? c : (an > bn) - (an < bn);
}

/* The walk sorts (folded key, quoted key, text): UTF-8 byte order is code point order, and equal folded keys
 * quote alike, so the quoted entry breaks a tie. */
static int entry_cmp(const Entry *x, const Entry *y, const char *keys, const char *out) {
    int c = bytes_cmp(keys + x->key, x->key_n, keys + y->key, y->key_n);
    return c != 0 ? c : bytes_cmp(out + x->item, x->item_n, out + y->item, y->item_n);
}

static void merge_sort(Entry *e, Entry *tmp, Py_ssize_t n, const char *keys, const char *out) {
    if (n < 2) {
        return;
    }
    Py_ssize_t half = n / 2;
    merge_sort(e, tmp, half, keys, out);
    merge_sort(e + half, tmp, n - half, keys, out);
    Py_ssize_t i = 0, j = half, k = 0;
    while (i < half && j < n) {
        tmp[k++] = entry_cmp(&e[j], &e[i], keys, out) < 0 ? e[j++] : e[i++];
    }
    while (i < half) {
        tmp[k++] = e[i++];
    }
    while (j < n) {
        tmp[k++] = e[j++];
    }
    memcpy(e, tmp, (size_t)n * sizeof(Entry));
}

static int put_dict(Buf *b, PyObject *d, int depth, Py_ssize_t *budget) {
    Py_ssize_t n = PyDict_GET_SIZE(d);
    if (n == 0) {
        return buf_put(b, "{}", 2);
    }
    Entry *entries = PyMem_Malloc((size_t)n * 2 * sizeof(Entry));
    Buf keys = {NULL, 0, 0};
    Py_ssize_t start = b->len, pos = 0, count = 0;
    PyObject *key, *item;
    int rc = entries == NULL ? (PyErr_NoMemory(), -1) : 0;
    while (rc == 0 && PyDict_Next(d, &pos, &key, &item)) {
        if (count >= n || !PyUnicode_CheckExact(key)) { /* a dict that grew, or a key that is not a str */
            rc = NOT_PLAIN;
            break;
        }
        Py_INCREF(key); /* held while a string is folded in Python */
        Py_INCREF(item);
        Entry *e = &entries[count++];
        e->key = keys.len;
        e->item = b->len;
        if (simple_text(key)) {
            rc = put_folded(&keys, key, 0);
            if (rc == 0) {
                rc = put_folded(b, key, 1);
            }
        } else {
            rc = put_text_python(b, key, &keys);
        }
        e->key_n = keys.len - e->key;
        if (rc == 0) {
            rc = buf_put(b, ":", 1);
        }
        if (rc == 0) {
            rc = put_value(b, item, depth, budget);
        }
        e->item_n = b->len - e->item;
        Py_DECREF(key);
        Py_DECREF(item);
    }
    char *region = NULL;
    if (rc == 0 && count != n) {
        rc = NOT_PLAIN;
    }
    if (rc == 0) {
        merge_sort(entries, entries + n, n, keys.data, b->data);
        Py_ssize_t size = b->len - start;
        region = PyMem_Malloc((size_t)size);
        if (region == NULL) {
            rc = -1;
            PyErr_NoMemory();
        } else {
            memcpy(region, b->data + start, (size_t)size);
            b->len = start;
            rc = buf_put(b, "{", 1);
            for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
                if (i > 0) {
                    rc = buf_put(b, ",", 1);
                }
                if (rc == 0) {
                    rc = buf_put(b, region + (entries[i].item - start), entries[i].item_n);
                }
            }
            if (rc == 0) {
                rc = buf_put(b, "}", 1);
            }
        }
    }
    PyMem_Free(region);
    PyMem_Free(keys.data);
    PyMem_Free(entries);
    return rc;
}

static int put_sequence(Buf *b, PyObject *seq, int depth, Py_ssize_t *budget) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (buf_put(b, "[", 1) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0 && buf_put(b, ",", 1) < 0) {
            return -1;
        }
        if (i >= PySequence_Fast_GET_SIZE(seq)) { /* a list that shrank while a string was folded */
            return NOT_PLAIN;
        }
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        int rc = put_value(b, item, depth, budget);
        Py_DECREF(item);
        if (rc != 0) {
            return rc;
        }
    }
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        return NOT_PLAIN;
    }
    return buf_put(b, "]", 1);
}

/* signatures._plain: a container within the depth limit and the node budget. */
static int put_container(Buf *b, PyObject *v, int depth, Py_ssize_t *budget) {
    if (depth >= max_depth) {
        return NOT_PLAIN;
    }
    Py_ssize_t n = PyDict_CheckExact(v) ? PyDict_GET_SIZE(v) : PySequence_Fast_GET_SIZE(v);
    *budget -= n + 1;
    if (*budget < 0) {
        return NOT_PLAIN;
    }
    if (Py_EnterRecursiveCall(" in loose_json") != 0) {
        return -1;
    }
    int rc = PyDict_CheckExact(v) ? put_dict(b, v, depth + 1, budget) : put_sequence(b, v, depth + 1, budget);
    Py_LeaveRecursiveCall();
    return rc;
}

static int put_value(Buf *b, PyObject *v, int depth, Py_ssize_t *budget) {
    PyTypeObject *kind = Py_TYPE(v);
    if (kind == &PyUnicode_Type) {
        return simple_text(v) ? put_folded(b, v, 1) : put_text_python(b, v, NULL);
    }
    if (kind == &PyLong_Type) {
        return put_int(b, v);
    }
    if (kind == &PyDict_Type || kind == &PyList_Type || kind == &PyTuple_Type) {
        return put_container(b, v, depth, budget);
    }
    if (v == Py_None) {
        return buf_put(b, "null", 4);
    }
    if (v == Py_True) {
        return buf_put(b, "true", 4);
    }
    if (v == Py_False) {
        return buf_put(b, "false", 5);
    }
    if (kind == &PyFloat_Type) {
        return put_float(b, PyFloat_AS_DOUBLE(v));
    }
    return NOT_PLAIN;
}

static PyObject *loose_json(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2 || (nargs == 2 && !PyBytes_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "loose_json(value, prefix=b'') takes a value and optional bytes");
        return NULL;
    }
    if (fold_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "loopguard_core._speedups is not configured (import signatures)");
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    int rc = 0;
    if (nargs == 2) {
        rc = buf_put(&b, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    }
    Py_ssize_t budget = max_nodes;
    if (rc == 0) {
        rc = put_value(&b, args[0], 0, &budget);
    }
    PyObject *result = NULL;
    if (rc == 0) {
        result = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (rc == NOT_PLAIN || PyErr_ExceptionMatches(PyExc_Exception)) {
        /* Not plain, or a value the walk writes another way (an int past the digit limit, a lone surrogate):
         * the pure-Python encoders write its text. Anything else (KeyboardInterrupt) goes on up. */
        PyErr_Clear();
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.data);
    return result;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *fold, *quote;
    int depth;
    Py_ssize_t nodes, above;
    if (!PyArg_ParseTuple(args, "OOinn", &fold, &quote, &depth, &nodes, &above)) {
        return NULL;
    }
    Py_XSETREF(fold_fn, Py_NewRef(fold));
    Py_XSETREF(quote_fn, Py_NewRef(quote));
    max_depth = depth;
    max_nodes = nodes;
    hash_above = above;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"loose_json", (PyCFunction)(void (*)(void))loose_json, METH_FASTCALL,
     "loose_json(value, prefix=b'') -> prefix + canonical_text(value) as UTF-8 bytes, or None if not plain."},
    {"configure", configure, METH_VARARGS,
     "configure(fold, quote, max_depth, max_nodes, hash_above): set by loopguard_core.signatures at import."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "loopguard_core._speedups", "Optional compiled fast path of loopguard_core.signatures.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddStringConstant(module, "source_digest", LG_SOURCE_DIGEST) < 0) {
        Py_CLEAR(module);
    }
    return module;
}
