/* graft data: the CSV reader (see csv.h). The file is mapped, split into records
 * (RFC 4180 quoting: a quoted cell may hold delimiters, "" and line breaks), each cell
 * copied NUL-terminated into a scratch buffer and parsed with strtod, which must consume
 * all of it. Values collect in a growing array of doubles, converted once at the end.
 */
#include "csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/io.h"

typedef struct {
    const char *p;
    size_t n, pos;
    int64_t line;          /* 1-based line at pos */
    char delim;
    const char *path;
    /* the current record: cells NUL-terminated in text, starting at off[i], on line[i] */
    char *text;
    size_t text_len, text_cap;
    size_t *off;
    int64_t *cell_line;
    int64_t ncells, cells_cap;
} csv_reader;

static graft_status csv_oom(const csv_reader *r) {
    return graft_error(GRAFT_ENOMEM, "read_csv: \"%s\": out of memory", r->path);
}

static graft_status csv_putc(csv_reader *r, char c) {
    if (r->text_len == r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap * 2 : 256;
        char *t = realloc(r->text, cap);
        if (!t) return csv_oom(r);
        r->text = t;
        r->text_cap = cap;
    }
    r->text[r->text_len++] = c;
    return GRAFT_OK;
}

static graft_status csv_begin_cell(csv_reader *r) {
    if (r->ncells == r->cells_cap) {
        int64_t cap = r->cells_cap ? r->cells_cap * 2 : 16;
        size_t *o = realloc(r->off, sizeof *o * (size_t)cap);
        if (!o) return csv_oom(r);
        r->off = o;
        int64_t *l = realloc(r->cell_line, sizeof *l * (size_t)cap);
        if (!l) return csv_oom(r);
        r->cell_line = l;
        r->cells_cap = cap;
    }
    r->off[r->ncells] = r->text_len;
    r->cell_line[r->ncells] = r->line;
    r->ncells++;
    return GRAFT_OK;
}

static bool csv_is_space(const csv_reader *r, char c) { return (c == ' ' || c == '\t') && c != r->delim; }

/* Reads the next record into r's cells. *got = 0 at the end of the file. A record is
 * one line unless a quoted cell spans lines; a line holding only spaces is a record
 * of one empty cell (the caller skips it). */
static graft_status csv_record(csv_reader *r, bool *got) {
    r->ncells = 0;
    r->text_len = 0;
    *got = false;
    if (r->pos >= r->n) return GRAFT_OK;
    *got = true;
    graft_status st;
    for (;;) {
        if ((st = csv_begin_cell(r))) return st;
        while (r->pos < r->n && csv_is_space(r, r->p[r->pos])) r->pos++;
        if (r->pos < r->n && r->p[r->pos] == '"') {
            int64_t start_line = r->line;
            r->pos++;
            for (;;) {
                if (r->pos >= r->n)
                    return graft_error(GRAFT_EFORMAT, "read_csv: \"%s\": line %lld, column %lld: unterminated quoted cell",
                                       r->path, (long long)start_line, (long long)r->ncells);
                char c = r->p[r->pos++];
                if (c == '"') {
                    if (r->pos < r->n && r->p[r->pos] == '"') r->pos++;
                    else break;
                }
                if (c == '\n') r->line++;
                if ((st = csv_putc(r, c))) return st;
            }
            while (r->pos < r->n && (csv_is_space(r, r->p[r->pos]) || r->p[r->pos] == '\r')) r->pos++;
            if (r->pos < r->n && r->p[r->pos] != r->delim && r->p[r->pos] != '\n')
                return graft_error(GRAFT_EFORMAT,
                                   "read_csv: \"%s\": line %lld, column %lld: unexpected character '%c' after a quoted cell",
                                   r->path, (long long)r->line, (long long)r->ncells, r->p[r->pos]);
        } else {
            size_t start = r->pos;
            while (r->pos < r->n && r->p[r->pos] != r->delim && r->p[r->pos] != '\n') r->pos++;
            size_t end = r->pos;
            while (end > start && (csv_is_space(r, r->p[end - 1]) || r->p[end - 1] == '\r')) end--;
            for (size_t i = start; i < end; i++)
                if ((st = csv_putc(r, r->p[i]))) return st;
        }
        if ((st = csv_putc(r, '\0'))) return st;
        if (r->pos >= r->n) return GRAFT_OK;
        char c = r->p[r->pos++];
        if (c == '\n') {
            r->line++;
            return GRAFT_OK;
        }
        /* a delimiter: another cell follows */
    }
}

/* Whether cell s is a whole number for strtod; the value in *v. */
static bool csv_number(const char *s, double *v) {
    if (!*s) return false;
    char *end;
    *v = strtod(s, &end);
    return end != s && *end == '\0';
}

/* A cell's text for a message: quoted, cut at 40 bytes. */
static const char *csv_show(const char *s, char *buf, size_t n) {
    size_t len = strlen(s);
    if (len > 40) snprintf(buf, n, "\"%.40s...\"", s);
    else snprintf(buf, n, "\"%s\"", s);
    return buf;
}

graft_status graft_csv_read(graft_csv_table *out, const char *path, const graft_csv_opts *o) {
    memset(out, 0, sizeof *out);
    if (o->dtype != GRAFT_F32 && o->dtype != GRAFT_F64)
        return graft_error(GRAFT_ETYPE, "read_csv: dtype must be float32 or float64, got %s", graft_dtype_name(o->dtype));
    char delim = o->delimiter ? o->delimiter : ',';
    if (delim == '"' || delim == '\n' || delim == '\r')
        return graft_error(GRAFT_EINVAL, "read_csv: the delimiter cannot be a quote or a line break");
    graft_mapped_file m;
    if (graft_mapped_open(&m, path)) {
        char why[512];
        snprintf(why, sizeof why, "%s", graft_last_error());
        return graft_error(GRAFT_EIO, "read_csv: %s", why);
    }
    csv_reader r = {.p = (const char *)m.data, .n = m.size, .line = 1, .delim = delim, .path = path};
    graft_status st = GRAFT_OK;
    double *vals = NULL;
    size_t nvals = 0, cap = 0;
    int64_t ncols = -1, nrows = 0;
    char **names = NULL;
    bool first = true;
    char shown[64];
    if (r.n >= 3 && memcmp(r.p, "\xEF\xBB\xBF", 3) == 0) r.pos = 3; /* a UTF-8 byte-order mark */
    for (;;) {
        int64_t rec_line = r.line;
        bool got;
        if ((st = csv_record(&r, &got))) goto done;
        if (!got) break;
        if (r.ncells == 1 && r.text[r.off[0]] == '\0') continue; /* a blank line */
        if (first) {
            first = false;
            ncols = r.ncells;
            int header = o->header;
            if (header < 0) {
                header = 0;
                for (int64_t i = 0; i < r.ncells; i++) {
                    double v;
                    if (!csv_number(r.text + r.off[i], &v)) header = 1;
                }
            }
            if (header) {
                names = calloc((size_t)ncols, sizeof *names);
                if (!names) { st = csv_oom(&r); goto done; }
                for (int64_t i = 0; i < ncols; i++) {
                    names[i] = strdup(r.text + r.off[i]);
                    if (!names[i]) { st = csv_oom(&r); goto done; }
                }
                continue;
            }
        }
        if (r.ncells != ncols) {
            st = graft_error(GRAFT_EFORMAT, "read_csv: \"%s\": line %lld has %lld columns, expected %lld (as %s)", path,
                             (long long)rec_line, (long long)r.ncells, (long long)ncols,
                             names ? "the header" : "the first row");
            goto done;
        }
        if (nvals + (size_t)ncols > cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            while (ncap < nvals + (size_t)ncols) ncap *= 2;
            double *nv = realloc(vals, ncap * sizeof *nv);
            if (!nv) { st = csv_oom(&r); goto done; }
            vals = nv;
            cap = ncap;
        }
        for (int64_t i = 0; i < ncols; i++) {
            const char *cell = r.text + r.off[i];
            if (!csv_number(cell, &vals[nvals + (size_t)i])) {
                st = graft_error(GRAFT_EFORMAT, "read_csv: \"%s\": line %lld, column %lld: %s %s", path,
                                 (long long)r.cell_line[i], (long long)(i + 1),
                                 *cell ? csv_show(cell, shown, sizeof shown) : "an empty cell",
                                 *cell ? "is not a number" : "where a number is expected");
                goto done;
            }
        }
        nvals += (size_t)ncols;
        nrows++;
    }
    if (ncols < 0) {
        st = graft_error(GRAFT_EFORMAT, "read_csv: \"%s\": no rows (the file is empty)", path);
        goto done;
    }
    int64_t shape[2] = {nrows, ncols};
    if ((st = graft_tensor_empty(&out->values, 2, shape, o->dtype, graft_cpu))) goto done;
    if (o->dtype == GRAFT_F64) {
        if (nvals) memcpy(graft_tensor_data(out->values), vals, nvals * sizeof(double));
    } else {
        float *d = graft_tensor_data(out->values);
        for (size_t i = 0; i < nvals; i++) d[i] = (float)vals[i];
    }
    out->names = names;
    out->ncols = ncols;
    names = NULL;
done:
    if (names) {
        for (int64_t i = 0; i < ncols; i++) free(names[i]);
        free(names);
    }
    free(vals);
    free(r.text);
    free(r.off);
    free(r.cell_line);
    graft_mapped_close(&m);
    if (st) {
        graft_tensor_release(out->values);
        out->values = NULL;
    }
    return st;
}

void graft_csv_table_free(graft_csv_table *t) {
    graft_tensor_release(t->values);
    if (t->names)
        for (int64_t i = 0; i < t->ncols; i++) free(t->names[i]);
    free(t->names);
    memset(t, 0, sizeof *t);
}
