/* SVG plots: see plot.h for what they show and the history format.
 *
 * An SVG is built in a growing buffer (Svg), then written in one go. A figure
 * is made of frames: a plot area in pixels, the data limits it shows, and the
 * axes, ticks, grid and labels around it. Both the history panels and the
 * embedding plot use the same frame code. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Ticks along an axis: about this many; never more than MAX_TICKS. */
#define TARGET_TICKS 6
#define MAX_TICKS 40

/* matplotlib's first two colours, so the figures look like the tutorials'. */
#define TRAIN_COLOR "#1f77b4"
#define VAL_COLOR "#ff7f0e"



/* ---- The SVG buffer ---- */

typedef struct Svg {
    char *p;
    size_t n, cap;
    bool oom;       /* set once an append failed; later appends do nothing */
} Svg;

static void svg_reserve(Svg *s, size_t more) {
    if (s->oom || s->n + more + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->n + more + 1)
        cap *= 2;
    char *p = realloc(s->p, cap);
    if (!p) {
        s->oom = true;
        return;
    }
    s->p = p;
    s->cap = cap;
}

static void put_bytes(Svg *s, const char *b, size_t n) {
    svg_reserve(s, n);
    if (s->oom)
        return;
    memcpy(s->p + s->n, b, n);
    s->n += n;
    s->p[s->n] = '\0';
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void put(Svg *s, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        put_bytes(s, small, (size_t)n);
        return;
    }
    svg_reserve(s, (size_t)n);
    if (s->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(s->p + s->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->n += (size_t)n;
}

/* Length of the UTF-8 character at p (1..4) that XML 1.0 allows in text, or 0
 * for an invalid sequence (bad lead byte, missing continuation, overlong form,
 * surrogate, above U+10FFFF) or a character XML forbids (U+FFFE, U+FFFF). */
static int xml_char_len(const unsigned char *p, size_t n) {
    int len;
    uint32_t cp, min;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07, min = 0x10000;
    else
        return 0;
    if ((size_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
        return 0;
    return len;
}

/* Appends bytes as XML character data, at most max_chars characters (0: no
 * limit) and then an ellipsis. The markup characters become entities; ASCII
 * controls, which XML 1.0 forbids even as references, and bytes that are not
 * UTF-8 are spelled as the vocabulary file spells them (\n \t \r \xHH). With
 * visible_space a space is drawn as U+2423 so a space token shows. */
static void put_text(Svg *s, const char *text, size_t len, int max_chars, bool visible_space) {
    const unsigned char *p = (const unsigned char *)text;
    int chars = 0;
    for (size_t i = 0; i < len; chars++) {
        if (max_chars > 0 && chars == max_chars) {
            put(s, "\xe2\x80\xa6"); /* U+2026 */
            return;
        }
        unsigned char c = p[i];
        int n = xml_char_len(p + i, len - i);
        switch (n == 1 ? c : 0x100) {
        case '&': put(s, "&amp;"); break;
        case '<': put(s, "&lt;"); break;
        case '>': put(s, "&gt;"); break;
        case '"': put(s, "&quot;"); break;
        case '\'': put(s, "&apos;"); break;
        case '\\': put(s, "\\\\"); break;
        case '\n': put(s, "\\n"); break;
        case '\t': put(s, "\\t"); break;
        case '\r': put(s, "\\r"); break;
        case ' ': put(s, visible_space ? "\xe2\x90\xa3" : " "); break;
        default:
            if (n == 0 || c < 0x20 || c == 0x7f) {
                put(s, "\\x%02x", c);
                n = 1;
            } else {
                put_bytes(s, text + i, (size_t)n);
            }
        }
        i += (size_t)n;
    }
}

static void put_str(Svg *s, const char *text) { put_text(s, text, strlen(text), 0, false); }

static void svg_begin(Svg *s, double width, double height) {
    put(s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" height=\"%.0f\" "
        "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
        width, height, width, height);
    put(s, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, height);
}

/* Closes the document; NULL (err set) when an append ran out of memory. */
static char *svg_end(Svg *s, size_t *size, RtDataError *err) {
    put(s, "</svg>\n");
    if (s->oom) {
        free(s->p);
        rt_data_fail(err, "out of memory drawing a plot");
        return NULL;
    }
    *size = s->n;
    return s->p;
}

static bool write_file(const char *path, const char *data, size_t n, RtDataError *err) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return rt_data_fail(err, "%s: cannot create: %s", path, strerror(errno));
    bool bad = fwrite(data, 1, n, f) != n;
    if (fclose(f) != 0 || bad)
        return rt_data_fail(err, "%s: write error", path);
    return true;
}

/* ---- Frames: axes, ticks and grid ---- */

typedef struct Frame {
    double left, top, width, height;    /* the plot area in pixels */
    double xlo, xhi, ylo, yhi;          /* the data shown */
    bool x_whole;                       /* x ticks at whole numbers only (epochs) */
} Frame;

static double px(const Frame *f, double x) { return f->left + (x - f->xlo) / (f->xhi - f->xlo) * f->width; }
static double py(const Frame *f, double y) { return f->top + f->height - (y - f->ylo) / (f->yhi - f->ylo) * f->height; }

/* Limits that show [lo, hi] with 5% to spare on each side, as matplotlib's
 * default margins do; a single value gets a span around it. */
static void limits(double lo, double hi, double *a, double *b) {
    if (!(lo <= hi)) /* no values */
        lo = 0, hi = 1;
    double span = hi - lo;
    if (span <= 1e-12 * fmax(fabs(lo), fabs(hi))) {
        double half = lo == 0 ? 1 : 0.1 * fabs(lo);
        *a = lo - half;
        *b = hi + half;
        return;
    }
    *a = lo - 0.05 * span;
    *b = hi + 0.05 * span;
}

/* A round step (1, 2 or 5 times a power of ten) giving about TARGET_TICKS
 * ticks over the span. */
static double tick_step(double span, bool whole) {
    double raw = span / TARGET_TICKS;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    return whole && step < 1 ? 1 : step;
}

/* Decimals that print every multiple of step exactly: 0.05 -> 2, 5 -> 0. */
static int tick_decimals(double step) {
    if (step >= 1)
        return 0;
    int d = (int)ceil(-log10(step) - 1e-9);
    return d > 15 ? 15 : d;
}

static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < 1e-9 * step)
        v = 0; /* no "-0.0" */
    if (fabs(v) >= 1e15 || (step < 1e-15))
        snprintf(buf, n, "%g", v);
    else
        snprintf(buf, n, "%.*f", tick_decimals(step), v);
}

/* Draws the grid, the frame, the ticks with their labels and the axis labels.
 * The y axis's label goes left of the widest tick label, but not left of
 * min_x (the figure's or panel's edge plus the label's height). */
static void frame_draw(Svg *s, const Frame *f, const char *xlabel, const char *ylabel, double min_x) {
    double step[2] = {tick_step(f->xhi - f->xlo, f->x_whole), tick_step(f->yhi - f->ylo, false)};
    double lo[2] = {f->xlo, f->ylo}, hi[2] = {f->xhi, f->yhi};
    char label[64];
    size_t widest = 0;
    put(s, "<g font-size=\"11\" fill=\"#333333\">\n");
    for (int axis = 0; axis < 2; axis++) {
        double first = ceil(lo[axis] / step[axis] - 1e-9);
        for (int k = 0; k < MAX_TICKS; k++) {
            double v = (first + k) * step[axis];
            if (v > hi[axis] + 1e-9 * step[axis])
                break;
            tick_label(label, sizeof label, v, step[axis]);
            if (axis == 0) {
                double x = px(f, v), y = f->top + f->height;
                put(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>\n", x, f->top, x, y);
                put(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\"/>\n", x, y, x, y + 5);
                put(s, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n", x, y + 18, label);
            } else {
                double y = py(f, v), x = f->left;
                put(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>\n", x, y,
                    x + f->width, y);
                put(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\"/>\n", x - 5, y, x, y);
                put(s, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", x - 8, y + 4, label);
                if (strlen(label) > widest)
                    widest = strlen(label);
            }
        }
    }
    put(s, "</g>\n");
    put(s, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#333333\"/>\n",
        f->left, f->top, f->width, f->height);
    put(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"13\" text-anchor=\"middle\">", f->left + f->width / 2,
        f->top + f->height + 38);
    put_str(s, xlabel);
    put(s, "</text>\n");
    /* Digits are about 0.6 em wide: 6.5 px at 11 px. */
    double yx = fmax(min_x, f->left - 8 - 6.5 * (double)widest - 10), yy = f->top + f->height / 2;
    put(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 %.2f %.2f)\">",
        yx, yy, yx, yy);
    put_str(s, ylabel);
    put(s, "</text>\n");
}

/* ---- Training history ---- */

void rt_plot_history_free(RtHistory *h) {
    if (h->name)
        for (int c = 0; c < h->columns; c++)
            free(h->name[c]);
    free(h->name);
    free(h->value);
    memset(h, 0, sizeof *h);
}

typedef struct Lines {
    const char *p, *end;
    int64_t lineno;
} Lines;

/* The next line without "\n" or "\r\n"; false at the end. */
static bool next_line(Lines *l, const char **line, size_t *len) {
    if (l->p >= l->end)
        return false;
    l->lineno++;
    const char *nl = memchr(l->p, '\n', (size_t)(l->end - l->p));
    const char *stop = nl ? nl : l->end;
    *line = l->p;
    *len = (size_t)(stop - l->p);
    if (*len > 0 && l->p[*len - 1] == '\r')
        (*len)--;
    l->p = nl ? nl + 1 : l->end;
    return true;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Splits a line at commas into at most `max` trimmed fields; returns how many
 * fields the line has (which may be more than max). */
static int split_fields(const char *line, size_t len, const char **f, size_t *flen, int max) {
    int n = 0;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < len && line[j] != ',')
            j++;
        const char *s = line + i;
        size_t k = j - i;
        while (k > 0 && is_blank(*s))
            s++, k--;
        while (k > 0 && is_blank(s[k - 1]))
            k--;
        if (n < max) {
            f[n] = s;
            flen[n] = k;
        }
        n++;
        if (j == len)
            return n;
        i = j + 1;
    }
}

/* 1 for a number filling the whole field (NaN and infinities included), 0 otherwise. */
static int parse_double(const char *s, size_t n, double *out) {
    char buf[128];
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return end == buf + n;
}

static bool history_header(const char *name, const char *line, size_t len, RtHistory *h, RtDataError *err) {
    const char *f[RT_PLOT_MAX_COLUMNS];
    size_t flen[RT_PLOT_MAX_COLUMNS];
    int n = split_fields(line, len, f, flen, RT_PLOT_MAX_COLUMNS);
    if (n > RT_PLOT_MAX_COLUMNS)
        return rt_data_fail(err, "%s:1: %d columns, more than the limit of %d", name, n, RT_PLOT_MAX_COLUMNS);
    if (!(h->name = calloc((size_t)n, sizeof *h->name)))
        return rt_data_fail(err, "%s: out of memory", name);
    h->columns = n;
    h->epoch = -1;
    for (int c = 0; c < n; c++) {
        if (flen[c] == 0)
            return rt_data_fail(err, "%s:1: column %d has no name", name, c + 1);
        for (int d = 0; d < c; d++)
            if (strlen(h->name[d]) == flen[c] && memcmp(h->name[d], f[c], flen[c]) == 0)
                return rt_data_fail(err, "%s:1: columns %d and %d are both named '%.*s'", name, d + 1, c + 1,
                            rt_data_quote_len(flen[c]), f[c]);
        if (!(h->name[c] = malloc(flen[c] + 1)))
            return rt_data_fail(err, "%s: out of memory", name);
        memcpy(h->name[c], f[c], flen[c]);
        h->name[c][flen[c]] = '\0';
        if (strcmp(h->name[c], "epoch") == 0)
            h->epoch = c;
    }
    if (h->epoch < 0)
        return rt_data_fail(err, "%s:1: no 'epoch' column (a history's header reads like 'epoch,loss,val_loss')", name);
    if (n < 2)
        return rt_data_fail(err, "%s:1: no column besides 'epoch'", name);
    return true;
}

bool rt_plot_history_parse(const char *name, const char *text, size_t size, RtHistory *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (size == 0)
        return rt_data_fail(err, "%s: empty file", name);
    Lines l = {text, text + size, 0};
    const char *line;
    size_t len, cap = 0;
    next_line(&l, &line, &len);
    if (!history_header(name, line, len, out, err))
        goto bad;
    const char *f[RT_PLOT_MAX_COLUMNS];
    size_t flen[RT_PLOT_MAX_COLUMNS];
    int cols = out->columns;
    while (next_line(&l, &line, &len)) {
        if (len == 0) {
            rt_data_fail(err, "%s:%lld: empty line", name, (long long)l.lineno);
            goto bad;
        }
        int n = split_fields(line, len, f, flen, RT_PLOT_MAX_COLUMNS);
        if (n != cols) {
            rt_data_fail(err, "%s:%lld: %d field%s, the header has %d", name, (long long)l.lineno, n, n == 1 ? "" : "s",
                 cols);
            goto bad;
        }
        if (out->rows == RT_PLOT_MAX_EPOCHS) {
            rt_data_fail(err, "%s:%lld: more than the limit of %d epochs", name, (long long)l.lineno, RT_PLOT_MAX_EPOCHS);
            goto bad;
        }
        if ((size_t)out->rows == cap) {
            cap = cap ? 2 * cap : 64;
            double *v = realloc(out->value, cap * (size_t)cols * sizeof *v);
            if (!v) {
                rt_data_fail(err, "%s: out of memory", name);
                goto bad;
            }
            out->value = v;
        }
        double *row = out->value + out->rows * cols;
        for (int c = 0; c < cols; c++) {
            row[c] = NAN;
            if (flen[c] == 0) {
                if (c != out->epoch)
                    continue;
                rt_data_fail(err, "%s:%lld: column %d (epoch) is empty", name, (long long)l.lineno, c + 1);
                goto bad;
            }
            if (!parse_double(f[c], flen[c], &row[c])) {
                rt_data_fail(err, "%s:%lld: column %d (%s): '%.*s' is not a number", name, (long long)l.lineno, c + 1,
                     out->name[c], rt_data_quote_len(flen[c]), f[c]);
                goto bad;
            }
        }
        double e = row[out->epoch];
        if (!isfinite(e)) {
            rt_data_fail(err, "%s:%lld: column %d (epoch): '%.*s' is not a finite number", name, (long long)l.lineno,
                 out->epoch + 1, rt_data_quote_len(flen[out->epoch]), f[out->epoch]);
            goto bad;
        }
        if (out->rows > 0 && !(e > row[out->epoch - cols])) {
            rt_data_fail(err, "%s:%lld: column %d (epoch): %g does not follow %g on the line before", name,
                 (long long)l.lineno, out->epoch + 1, e, row[out->epoch - cols]);
            goto bad;
        }
        out->rows++;
    }
    if (out->rows == 0) {
        rt_data_fail(err, "%s: no epochs after the header", name);
        goto bad;
    }
    return true;
bad:
    rt_plot_history_free(out);
    return false;
}

bool rt_plot_history_read(const char *path, RtHistory *out, RtDataError *err) {
    char *data;
    size_t size;
    memset(out, 0, sizeof *out);
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    bool ok = rt_plot_history_parse(path, data, size, out, err);
    free(data);
    return ok;
}

/* A panel: one quantity, its training column and its validation column (-1
 * when absent or without a single value). */
typedef struct Panel {
    const char *quantity;
    int train, val;
} Panel;

static bool has_value(const RtHistory *h, int c) {
    for (int64_t r = 0; r < h->rows; r++)
        if (isfinite(h->value[r * h->columns + c]))
            return true;
    return false;
}

static int column_of(const RtHistory *h, const char *name) {
    for (int c = 0; c < h->columns; c++)
        if (strcmp(h->name[c], name) == 0)
            return c;
    return -1;
}

/* The loss first, then the metrics in column order; val_X goes with X. */
static int history_panels(const RtHistory *h, Panel *p) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int c = 0; c < h->columns; c++) {
            const char *nm = h->name[c];
            bool is_val = strncmp(nm, "val_", 4) == 0 && nm[4] != '\0';
            const char *q = is_val ? nm + 4 : nm;
            if (c == h->epoch || (strcmp(q, "loss") == 0) != (pass == 0))
                continue;
            if (is_val && column_of(h, q) >= 0)
                continue; /* drawn with its training column */
            int train = is_val ? -1 : c;
            char vname[RT_DATA_ERROR_BYTES];
            snprintf(vname, sizeof vname, "val_%s", q);
            int val = is_val ? c : column_of(h, vname);
            if (train >= 0 && !has_value(h, train))
                train = -1;
            if (val >= 0 && !has_value(h, val))
                val = -1;
            if (train >= 0 || val >= 0)
                p[n++] = (Panel){q, train, val};
        }
    }
    return n;
}

/* Panel size and the plot area's margins inside it, in pixels. */
#define PANEL_W 480.0
#define PANEL_H 360.0
#define PANEL_LEFT 85.0
#define PANEL_RIGHT 20.0
#define PANEL_TOP 62.0
#define PANEL_BOTTOM 52.0

/* One polyline per run of consecutive values (a lone value between gaps is a
 * point without a line), then a circle per value when markers are on. */
static void draw_series(Svg *s, const Frame *f, const RtHistory *h, int col, const char *color, bool markers) {
    int cols = h->columns;
    const double *v = h->value;
    for (int64_t r = 0; r < h->rows;) {
        int64_t end = r;
        while (end < h->rows && isfinite(v[end * cols + col]))
            end++;
        if (end - r >= 2) {
            put(s, "<polyline class=\"line\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
            for (int64_t k = r; k < end; k++)
                put(s, "%s%.2f,%.2f", k > r ? " " : "", px(f, v[k * cols + h->epoch]), py(f, v[k * cols + col]));
            put(s, "\"/>\n");
        }
        r = end > r ? end : r + 1;
    }
    if (!markers)
        return;
    for (int64_t r = 0; r < h->rows; r++) {
        double x = v[r * cols + h->epoch], y = v[r * cols + col];
        if (isfinite(y))
            put(s, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\"/>\n", px(f, x), py(f, y),
                color);
    }
}

static void draw_panel(Svg *s, const RtHistory *h, const Panel *p, double ox, double oy) {
    int cols = h->columns;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int64_t r = 0; r < h->rows; r++) {
        double x = h->value[r * cols + h->epoch];
        xmin = fmin(xmin, x);
        xmax = fmax(xmax, x);
        for (int k = 0; k < 2; k++) {
            int c = k ? p->val : p->train;
            double y = c >= 0 ? h->value[r * cols + c] : NAN;
            if (isfinite(y)) {
                ymin = fmin(ymin, y);
                ymax = fmax(ymax, y);
            }
        }
    }
    Frame f = {ox + PANEL_LEFT, oy + PANEL_TOP, PANEL_W - PANEL_LEFT - PANEL_RIGHT,
               PANEL_H - PANEL_TOP - PANEL_BOTTOM, 0, 0, 0, 0, true};
    limits(xmin, xmax, &f.xlo, &f.xhi);
    limits(ymin, ymax, &f.ylo, &f.yhi);
    put(s, "<g class=\"panel\">\n");
    put(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"15\" text-anchor=\"middle\">", ox + PANEL_W / 2, oy + 22);
    put(s, p->train >= 0 && p->val >= 0 ? "Training and validation " : p->train >= 0 ? "Training " : "Validation ");
    put_str(s, p->quantity);
    put(s, "</text>\n");
    frame_draw(s, &f, "epoch", p->quantity, ox + 16);

    bool markers = h->rows <= RT_PLOT_MAX_MARKERS;
    /* The legend sits between the title and the plot area, so it never hides
     * a point. An entry takes the key (30 px), its text at a little over half
     * an em per character (12 px), and a gap; when two entries with the
     * quantity's name would not fit, they say only "Training", "Validation"
     * (the title and the axis name the quantity). */
    size_t qlen = strlen(p->quantity);
    bool named = 2 * (30 + 6.6 * (double)(11 + qlen) + 20) <= f.width;
    double lx = f.left, ly = oy + 44;
    for (int k = 0; k < 2; k++) {
        int c = k ? p->val : p->train;
        if (c < 0)
            continue;
        const char *color = k ? VAL_COLOR : TRAIN_COLOR;
        draw_series(s, &f, h, c, color, markers);
        put(s, "<line class=\"key\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
            lx, ly, lx + 24, ly, color);
        if (markers)
            put(s, "<circle class=\"key\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\"/>\n", lx + 12, ly, color);
        put(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"12\">%s", lx + 30, ly + 4, k ? "Validation" : "Training");
        if (named) {
            put(s, " ");
            put_str(s, p->quantity);
        }
        put(s, "</text>\n");
        lx += 30 + 6.6 * (double)(11 + (named ? qlen : 0)) + 20;
    }
    put(s, "</g>\n");
}

char *rt_plot_history_svg(const RtHistory *h, size_t *size, RtDataError *err) {
    Panel *p = malloc((size_t)h->columns * sizeof *p);
    if (!p) {
        rt_data_fail(err, "out of memory drawing a plot");
        return NULL;
    }
    int n = history_panels(h, p);
    if (n == 0) {
        free(p);
        rt_data_fail(err, "no column besides 'epoch' has a value");
        return NULL;
    }
    int across = n < 2 ? n : 2, down = (n + across - 1) / across;
    Svg s = {0};
    svg_begin(&s, across * PANEL_W, down * PANEL_H);
    for (int i = 0; i < n; i++)
        draw_panel(&s, h, &p[i], (i % across) * PANEL_W, (i / across) * PANEL_H);
    free(p);
    return svg_end(&s, size, err);
}

bool rt_plot_history(const char *csv_path, const char *svg_path, RtDataError *err) {
    RtHistory h;
    if (!rt_plot_history_read(csv_path, &h, err))
        return false;
    size_t n;
    char *svg = rt_plot_history_svg(&h, &n, err);
    rt_plot_history_free(&h);
    if (!svg) {
        char msg[RT_DATA_ERROR_BYTES];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return rt_data_fail(err, "%s: %s", csv_path, msg);
    }
    bool ok = write_file(svg_path, svg, n, err);
    free(svg);
    return ok;
}

/* ---- PCA ---- */

/* A deterministic start vector with no structure that a test matrix could be
 * orthogonal to by construction (a 64-bit LCG's top bits, in [-1, 1)). */
static void start_vector(double *v, int64_t d) {
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int64_t j = 0; j < d; j++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        v[j] = (double)(state >> 11) / (double)(1ull << 52) - 1.0;
    }
}

static double norm(const double *v, int64_t d) {
    double s = 0;
    for (int64_t j = 0; j < d; j++)
        s += v[j] * v[j];
    return sqrt(s);
}

/* The top eigenvector of the symmetric positive semi-definite c [d, d] into v,
 * kept orthogonal to `against` (when not NULL); returns its eigenvalue, 0 when
 * c carries no variance outside `against` (v is then all zeros). */
static double power_iteration(const double *c, int64_t d, const double *against, double *v, double *w,
                              double trace) {
    start_vector(v, d);
    double lambda = 0;
    for (int it = 0; it < RT_PLOT_PCA_MAX_ITER; it++) {
        if (against) {
            double dot = 0;
            for (int64_t j = 0; j < d; j++)
                dot += v[j] * against[j];
            for (int64_t j = 0; j < d; j++)
                v[j] -= dot * against[j];
        }
        double nv = norm(v, d);
        if (nv <= 1e-300)
            break;
        for (int64_t j = 0; j < d; j++)
            v[j] /= nv;
        for (int64_t i = 0; i < d; i++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++)
                s += c[i * d + j] * v[j];
            w[i] = s;
        }
        lambda = 0;
        for (int64_t j = 0; j < d; j++)
            lambda += v[j] * w[j];
        double nw = norm(w, d);
        /* Variance below rounding noise: no direction to speak of. */
        if (nw <= 1e-12 * trace) {
            lambda = 0;
            break;
        }
        double moved = 0;
        for (int64_t j = 0; j < d; j++) {
            double x = w[j] / nw;
            moved += (x - v[j]) * (x - v[j]);
            v[j] = x;
        }
        if (moved < 1e-24)
            break;
    }
    if (lambda <= 1e-12 * trace) {
        memset(v, 0, (size_t)d * sizeof *v);
        return 0;
    }
    /* The sign: the entry of largest magnitude (the first such) is positive. */
    int64_t big = 0;
    for (int64_t j = 1; j < d; j++)
        if (fabs(v[j]) > fabs(v[big]) * (1 + 1e-9))
            big = j;
    if (v[big] < 0)
        for (int64_t j = 0; j < d; j++)
            v[j] = -v[j];
    return lambda;
}

bool rt_plot_pca(const float *x, int64_t n, int64_t d, double *xy, double explained[2], RtDataError *err) {
    if (n < 1 || d < 1)
        return rt_data_fail(err, "PCA of a [%lld, %lld] matrix: it needs at least one row and one column", (long long)n,
                    (long long)d);
    double *mean = calloc((size_t)d, sizeof *mean), *c = calloc((size_t)(d * d), sizeof *c);
    double *v1 = malloc((size_t)d * sizeof *v1), *v2 = malloc((size_t)d * sizeof *v2);
    double *w = malloc((size_t)d * sizeof *w), *row = malloc((size_t)d * sizeof *row);
    bool ok = mean && c && v1 && v2 && w && row;
    if (!ok) {
        rt_data_fail(err, "out of memory for the PCA of a [%lld, %lld] matrix", (long long)n, (long long)d);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++) {
            if (!isfinite(x[i * d + j])) {
                rt_data_fail(err, "PCA: entry [%lld, %lld] is %g, not a finite number", (long long)i, (long long)j,
                     x[i * d + j]);
                ok = false;
                goto done;
            }
            mean[j] += x[i * d + j];
        }
    }
    for (int64_t j = 0; j < d; j++)
        mean[j] /= (double)n;
    /* The covariance's upper triangle, then its mirror image. */
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++)
            row[j] = x[i * d + j] - mean[j];
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = a; b < d; b++)
                c[a * d + b] += row[a] * row[b];
    }
    double trace = 0;
    for (int64_t a = 0; a < d; a++) {
        for (int64_t b = a; b < d; b++)
            c[b * d + a] = c[a * d + b] /= (double)n;
        trace += c[a * d + a];
    }
    double l1 = power_iteration(c, d, NULL, v1, w, trace);
    /* Deflation: remove the first component's variance, then search again
     * (kept orthogonal to v1 so rounding cannot bring it back). */
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++)
            c[a * d + b] -= l1 * v1[a] * v1[b];
    double l2 = power_iteration(c, d, l1 > 0 ? v1 : NULL, v2, w, trace);
    for (int64_t i = 0; i < n; i++) {
        double p1 = 0, p2 = 0;
        for (int64_t j = 0; j < d; j++) {
            double dx = x[i * d + j] - mean[j];
            p1 += dx * v1[j];
            p2 += dx * v2[j];
        }
        xy[2 * i] = p1;
        xy[2 * i + 1] = p2;
    }
    if (explained) {
        explained[0] = trace > 0 ? l1 / trace : 0;
        explained[1] = trace > 0 ? l2 / trace : 0;
    }
done:
    free(mean);
    free(c);
    free(v1);
    free(v2);
    free(w);
    free(row);
    return ok;
}

/* ---- Embeddings ---- */

#define EMBED_W 1000.0
#define EMBED_H 800.0

bool rt_plot_embeddings(const float *emb, int64_t rows, int64_t dim, const RtVocab *vocab, int64_t top,
                        const char *title, const char *svg_path, double *xy, RtDataError *err) {
    if (rows < 2 || dim < 1)
        return rt_data_fail(err, "%s: an embedding of [%lld, %lld] has no token besides the padding id 0", title,
                    (long long)rows, (long long)dim);
    if (top < 1)
        return rt_data_fail(err, "%s: --top %lld: at least one token must be drawn", title, (long long)top);
    for (int64_t i = 0; i < rows * dim; i++)
        if (!isfinite(emb[i]))
            return rt_data_fail(err, "%s: entry [%lld, %lld] is %g, not a finite number", title, (long long)(i / dim),
                        (long long)(i % dim), emb[i]);
    double *own = NULL;
    if (!xy && !(xy = own = malloc((size_t)rows * 2 * sizeof *xy)))
        return rt_data_fail(err, "%s: out of memory", title);
    double explained[2];
    /* Row 0 is padding: it takes no part in the fit and is not drawn. */
    if (!rt_plot_pca(emb + dim, rows - 1, dim, xy + 2, explained, err)) {
        free(own);
        return false;
    }
    xy[0] = xy[1] = NAN;
    int64_t shown = top < rows - 1 ? top : rows - 1;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int64_t id = 1; id <= shown; id++) {
        xmin = fmin(xmin, xy[2 * id]);
        xmax = fmax(xmax, xy[2 * id]);
        ymin = fmin(ymin, xy[2 * id + 1]);
        ymax = fmax(ymax, xy[2 * id + 1]);
    }
    /* The right margin leaves room for the labels of the rightmost points. */
    Frame f = {80, 60, EMBED_W - 80 - 120, EMBED_H - 60 - 60, 0, 0, 0, 0, false};
    limits(xmin, xmax, &f.xlo, &f.xhi);
    limits(ymin, ymax, &f.ylo, &f.yhi);
    Svg s = {0};
    svg_begin(&s, EMBED_W, EMBED_H);
    put(&s, "<text x=\"%.2f\" y=\"28\" font-size=\"15\" text-anchor=\"middle\">", EMBED_W / 2);
    put_str(&s, title);
    put(&s, ": the %lld most frequent tokens</text>\n", (long long)shown);
    char xl[64], yl[64];
    snprintf(xl, sizeof xl, "first principal component (%.1f%% of the variance)", 100 * explained[0]);
    snprintf(yl, sizeof yl, "second principal component (%.1f%%)", 100 * explained[1]);
    frame_draw(&s, &f, xl, yl, 16);
    put(&s, "<g font-size=\"10\" fill=\"#1a1a1a\">\n");
    for (int64_t id = 1; id <= shown; id++) {
        double x = px(&f, xy[2 * id]), y = py(&f, xy[2 * id + 1]);
        put(&s, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"1.5\" fill=\"%s\"/>", x, y, TRAIN_COLOR);
        put(&s, "<text x=\"%.2f\" y=\"%.2f\">", x + 3, y - 3);
        if (vocab && id < vocab->size)
            put_text(&s, vocab->token[id], (size_t)vocab->len[id], RT_PLOT_MAX_LABEL_CHARS, true);
        else
            put(&s, "%lld", (long long)id);
        put(&s, "</text>\n");
    }
    put(&s, "</g>\n");
    free(own);
    size_t n;
    char *svg = svg_end(&s, &n, err);
    if (!svg)
        return false;
    bool ok = write_file(svg_path, svg, n, err);
    free(svg);
    return ok;
}

/* ---- The plot command ---- */

static const char HELP[] =
    "usage: %s plot HISTORY.csv -o OUT.svg\n"
    "       %s plot --embeddings CHECKPOINT.safetensors [--tensor NAME] [--top N] -o OUT.svg\n"
    "\n"
    "Draws an SVG file. From a training history (a CSV file with a header line\n"
    "'epoch,loss,accuracy,val_loss,val_accuracy' or any part of it): one panel\n"
    "for the loss and one per metric, training and validation against the epoch.\n"
    "From a checkpoint: the rows of an embedding projected on their first two\n"
    "principal components, each drawn as its token.\n"
    "\n"
    "  -o OUT.svg         the file to write\n"
    "  --embeddings CKPT  plot the embedding in this checkpoint\n"
    "  --tensor NAME      the embedding tensor (default: the one whose name ends\n"
    "                     in '.embeddings')\n"
    "  --top N            draw token ids 1..N, the N most frequent (default 500)\n";

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int usage(const char *prog, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s plot: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* The embedding tensor: the one named, or the only one ending in ".embeddings". */
static const RtStTensor *find_embedding(const RtStFile *f, const char *path, const char *name, const char *prog) {
    if (name) {
        const RtStTensor *t = rt_st_find(f, name);
        if (!t)
            fprintf(stderr, "%s plot: %s: no tensor named '%s'\n", prog, path, name);
        return t;
    }
    static const char suffix[] = ".embeddings";
    size_t ns = sizeof suffix - 1, count = 0;
    const RtStTensor *found = NULL;
    for (size_t i = 0; i < rt_st_tensor_count(f); i++) {
        const RtStTensor *t = rt_st_tensor_at(f, i);
        size_t n = strlen(t->name);
        if (n >= ns && strcmp(t->name + n - ns, suffix) == 0)
            found = t, count++;
    }
    if (count == 1)
        return found;
    fprintf(stderr, "%s plot: %s: ", prog, path);
    if (count == 0)
        fprintf(stderr, "no tensor's name ends in '.embeddings'; choose one with --tensor NAME");
    else
        fprintf(stderr, "%zu tensors' names end in '.embeddings'; choose one with --tensor NAME:", count);
    const char *sep = count == 0 ? " (the file holds " : " ";
    size_t listed = 0;
    for (size_t i = 0; i < rt_st_tensor_count(f); i++) {
        const char *tn = rt_st_tensor_at(f, i)->name;
        size_t n = strlen(tn);
        if (count > 0 && !(n >= ns && strcmp(tn + n - ns, suffix) == 0))
            continue;
        fprintf(stderr, "%s%s", sep, tn);
        sep = ", ";
        listed++;
    }
    fprintf(stderr, count == 0 ? (listed ? ")\n" : " (the file holds no tensor)\n") : "\n");
    return NULL;
}

static int plot_embeddings(const char *path, const char *tensor, int64_t top, const char *out, const char *prog) {
    RtStFile *f = NULL;
    char *e = rt_st_open(path, &f);
    if (e) {
        fprintf(stderr, "%s plot: %s\n", prog, e);
        rt_st_error_free(e);
        return 1;
    }
    int status = 1;
    float *emb = NULL;
    RtVocab vocab = {0};
    bool have_vocab = false;
    const RtStTensor *t = find_embedding(f, path, tensor, prog);
    if (!t)
        goto done;
    if (t->rank != 2 || (t->dtype != RT_ST_F32 && t->dtype != RT_ST_F64)) {
        fprintf(stderr, "%s plot: %s: tensor '%s' is %s of rank %d; an embedding is a rank-2 F32 or F64 matrix\n",
                prog, path, t->name, rt_st_dtype_name(t->dtype), t->rank);
        goto done;
    }
    if (!(emb = malloc((size_t)(t->count ? t->count : 1) * sizeof *emb))) {
        fprintf(stderr, "%s plot: %s: out of memory\n", prog, path);
        goto done;
    }
    if ((e = rt_st_read_f32(f, t->name, emb, t->count))) {
        fprintf(stderr, "%s plot: %s\n", prog, e);
        rt_st_error_free(e);
        goto done;
    }
    RtDataError err;
    const char *text = rt_st_meta_get(f, RT_DATA_VOCAB_META_KEY);
    if (text) {
        char name[RT_DATA_ERROR_BYTES / 2];
        snprintf(name, sizeof name, "%s: %s", path, RT_DATA_VOCAB_META_KEY);
        if (!rt_data_vocab_parse(name, text, strlen(text), &vocab, &err)) {
            fprintf(stderr, "%s plot: %s\n", prog, err.msg);
            goto done;
        }
        have_vocab = true;
    }
    char title[RT_DATA_ERROR_BYTES];
    snprintf(title, sizeof title, "%s in %s", t->name, path);
    if (!rt_plot_embeddings(emb, t->shape[0], t->shape[1], have_vocab ? &vocab : NULL, top, title, out, NULL,
                            &err)) {
        fprintf(stderr, "%s plot: %s\n", prog, err.msg);
        goto done;
    }
    status = 0;
done:
    if (have_vocab)
        rt_data_vocab_free(&vocab);
    free(emb);
    rt_st_close(f);
    return status;
}

int rt_plot_main(int argc, char **argv, const char *prog) {
    const char *out = NULL, *ckpt = NULL, *tensor = NULL, *history = NULL, *top_arg = NULL;
    int files = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf(HELP, prog, prog);
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "-o") == 0              ? &out
                            : strcmp(a, "--embeddings") == 0 ? &ckpt
                            : strcmp(a, "--tensor") == 0     ? &tensor
                            : strcmp(a, "--top") == 0        ? &top_arg
                                                              : NULL;
        if (slot) {
            if (i + 1 == argc)
                return usage(prog, "%s needs a value", a);
            if (*slot)
                return usage(prog, "%s is given twice", a);
            *slot = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage(prog, "unknown option '%s' (see %s plot --help)", a, prog);
        } else {
            history = a;
            files++;
        }
    }
    long long top = RT_PLOT_DEFAULT_TOP;
    if (top_arg) {
        char *end;
        errno = 0;
        top = strtoll(top_arg, &end, 10);
        if (!(top_arg[0] >= '0' && top_arg[0] <= '9') || *end || errno || top < 1 || top > RT_PLOT_MAX_TOP) {
            return usage(prog, "--top takes a whole number from 1 to %d, not '%s'", RT_PLOT_MAX_TOP, top_arg);
        }
    }
    if (ckpt && files > 0)
        return usage(prog, "takes a history file or --embeddings CHECKPOINT, not both (see %s plot --help)", prog);
    if (!ckpt && (tensor || top_arg))
        return usage(prog, "%s goes with --embeddings CHECKPOINT", tensor ? "--tensor" : "--top");
    if (!ckpt && files == 0)
        return usage(prog, "no input file (see %s plot --help)", prog);
    if (files > 1)
        return usage(prog, "takes exactly one history file");
    if (!out)
        return usage(prog, "no output file; name it with -o OUT.svg");
    if (ckpt)
        return plot_embeddings(ckpt, tensor, top, out, prog);
    RtDataError err;
    if (!rt_plot_history(history, out, &err)) {
        fprintf(stderr, "%s plot: %s\n", prog, err.msg);
        return 1;
    }
    return 0;
}
