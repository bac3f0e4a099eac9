/* tools/svg.h - self-contained SVG figures for the codi CLI: a heatmap with text in its cells
   (lens tables, attention maps), line plots and scatter plots. Each function writes one whole
   SVG document (no scripts, no external fonts or files) and returns 0, or -1 if the file
   cannot be written. Static functions with the prefix svg_, for tools/ unity builds. */
#ifndef CODI_SVG_H
#define CODI_SVG_H
#include <stdio.h>
#include <math.h>
#include <string.h>

#ifndef SVG_FOPEN                   /* how files are opened and finished (tools/cli.h: checked, atomic) */
#define SVG_FOPEN(path) fopen(path, "w")
#define SVG_FCLOSE(f) (fclose(f) == 0 ? 0 : -1)
#endif
#if defined(__GNUC__)
#define SVG_FN static __attribute__((unused))   /* a command may use only some */
#else
#define SVG_FN static
#endif

enum { SVG_VIRIDIS = 0, SVG_MAGMA = 1 };   /* perceptually uniform colour maps, dark = low */
enum { SVG_RDBU = 2 };                     /* diverging for signed values: blue < 0, white at t = 0.5, red > 0 */

/* XML-escaped text. */
SVG_FN void svg_text_escaped(FILE *f, const char *s) {
    for (; s && *s; s++)
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
}

/* Colour of t in [0, 1] on a map; rgb in 0..255. */
SVG_FN void svg_colour(int map, double t, int rgb[3]) {
    static const unsigned char viridis[9][3] = { { 68, 1, 84 }, { 71, 44, 122 }, { 59, 81, 139 }, { 44, 113, 142 },
        { 33, 144, 141 }, { 39, 173, 129 }, { 92, 200, 99 }, { 170, 220, 50 }, { 253, 231, 37 } };
    static const unsigned char magma[9][3] = { { 0, 0, 4 }, { 28, 16, 68 }, { 79, 18, 123 }, { 129, 37, 129 },
        { 181, 54, 122 }, { 229, 80, 100 }, { 251, 135, 97 }, { 254, 194, 135 }, { 252, 253, 191 } };
    static const unsigned char rdbu[9][3] = { { 5, 48, 97 }, { 33, 102, 172 }, { 67, 147, 195 }, { 146, 197, 222 },
        { 247, 247, 247 }, { 244, 165, 130 }, { 214, 96, 77 }, { 178, 24, 43 }, { 103, 0, 31 } };   /* ColorBrewer RdBu, reversed */
    const unsigned char (*m)[3] = map == SVG_MAGMA ? magma : map == SVG_RDBU ? rdbu : viridis;
    double x;
    int i, k;
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    x = t * 8; i = (int)x; if (i > 7) i = 7; x -= i;
    for (k = 0; k < 3; k++) rgb[k] = (int)(m[i][k] + (m[i + 1][k] - m[i][k]) * x + 0.5);
}

/* A categorical colour for series / group k. */
SVG_FN const char *svg_series_colour(int k) {
    static const char *c[10] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf" };
    return c[((k % 10) + 10) % 10];
}

SVG_FN void svg_begin(FILE *f, double w, double h) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", w, h, w, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
}

SVG_FN void svg_label(FILE *f, double x, double y, double size, const char *anchor, const char *extra, const char *text) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.1f\" text-anchor=\"%s\"%s%s>", x, y, size, anchor, extra ? " " : "", extra ? extra : "");
    svg_text_escaped(f, text);
    fputs("</text>\n", f);
}

typedef struct {
    int rows, cols;
    const double *value;             /* [rows, cols] colour value; NaN = empty cell */
    double vmin, vmax;               /* value range of the colour map */
    int colormap;                    /* SVG_VIRIDIS or SVG_MAGMA */
    const char *const *cell_text;    /* [rows * cols] text in each cell, or NULL */
    const unsigned char *mark;       /* [rows * cols] 1 = outline the cell (a target), or NULL */
    const char *const *row_labels;   /* [rows] (drawn left, top row first) */
    const char *const *col_labels;   /* [cols] */
    const char *title, *xlabel, *ylabel, *colorbar_label;
    double cell_w, cell_h;           /* 0: 64 x 22 */
    const char *subtitle;            /* a second, smaller title line (n, data, split), or NULL */
    const double *ticks; int n_ticks;/* colour bar ticks (round values in [vmin, vmax]); 0: vmin and vmax only */
} svg_heatmap_spec;

SVG_FN int svg_heatmap(const char *path, const svg_heatmap_spec *s) {
    double cw = s->cell_w > 0 ? s->cell_w : 64, ch = s->cell_h > 0 ? s->cell_h : 22;
    double left = 90, top = (s->title ? 46 : 20) + (s->subtitle ? 18 : 0), gw = cw * s->cols, gh = ch * s->rows, w, h;
    FILE *f;
    int r, c, k;
    char buf[64];
    for (r = 0; r < s->rows && s->row_labels; r++)      /* room for the longest row label (11 px text) beside the rotated axis label */
        if (34 + 6.6 * strlen(s->row_labels[r]) > left) left = 34 + 6.6 * strlen(s->row_labels[r]);
    w = left + gw + 110; h = top + gh + 60;
    if (s->title && 8.6 * strlen(s->title) + 40 > w) {  /* and for the title (15 px bold), centred over the grid */
        left += (8.6 * strlen(s->title) + 40 - w) / 2;
        w = 8.6 * strlen(s->title) + 40;
    }
    if (s->subtitle && 6.6 * strlen(s->subtitle) + 40 > w) {   /* the subtitle (12 px) likewise */
        left += (6.6 * strlen(s->subtitle) + 40 - w) / 2;
        w = 6.6 * strlen(s->subtitle) + 40;
    }
    if (!(f = SVG_FOPEN(path))) return -1;
    svg_begin(f, w, h);
    if (s->title) svg_label(f, left + gw / 2, 24, 15, "middle", "font-weight=\"bold\"", s->title);
    if (s->subtitle) svg_label(f, left + gw / 2, 42, 12, "middle", NULL, s->subtitle);
    for (r = 0; r < s->rows; r++)
        for (c = 0; c < s->cols; c++) {
            double v = s->value[(size_t)r * s->cols + c], t = (v - s->vmin) / (s->vmax - s->vmin);
            double x = left + c * cw, y = top + r * ch;
            int rgb[3];
            if (v != v) { fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#eeeeee\"/>\n", x, y, cw, ch); continue; }
            svg_colour(s->colormap, t, rgb);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"rgb(%d,%d,%d)\"><title>%.4g</title></rect>\n",
                    x, y, cw, ch, rgb[0], rgb[1], rgb[2], v);
            if (s->cell_text && s->cell_text[(size_t)r * s->cols + c]) {
                int light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140;
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"%s\" xml:space=\"preserve\">",
                        x + cw / 2, y + ch / 2 + 4, light ? "white" : "black");
                svg_text_escaped(f, s->cell_text[(size_t)r * s->cols + c]);
                fputs("</text>\n", f);
            }
        }
    if (s->mark)
        for (r = 0; r < s->rows; r++)
            for (c = 0; c < s->cols; c++)
                if (s->mark[(size_t)r * s->cols + c])
                    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#ff2020\" stroke-width=\"2.5\"/>\n",
                            left + c * cw + 1.5, top + r * ch + 1.5, cw - 3, ch - 3);
    for (r = 0; r < s->rows && s->row_labels; r++) svg_label(f, left - 6, top + r * ch + ch / 2 + 4, 11, "end", NULL, s->row_labels[r]);
    for (c = 0; c < s->cols && s->col_labels; c++) svg_label(f, left + c * cw + cw / 2, top + gh + 16, 11, "middle", NULL, s->col_labels[c]);
    if (s->xlabel) svg_label(f, left + gw / 2, top + gh + 36, 12, "middle", NULL, s->xlabel);
    if (s->ylabel) {
        fprintf(f, "<g transform=\"translate(16,%.1f) rotate(-90)\">", top + gh / 2);
        svg_label(f, 0, 0, 12, "middle", NULL, s->ylabel);
        fputs("</g>\n", f);
    }
    for (k = 0; k < 50; k++) {                       /* colour bar, high at the top */
        int rgb[3];
        svg_colour(s->colormap, 1 - (k + 0.5) / 50, rgb);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\"/>\n", left + gw + 20,
                top + gh * k / 50, gh / 50 + 0.3, rgb[0], rgb[1], rgb[2]);
    }
    if (s->n_ticks > 0)                              /* ticks at their values */
        for (k = 0; k < s->n_ticks; k++) {
            double y = top + gh * (s->vmax - s->ticks[k]) / (s->vmax - s->vmin);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", left + gw + 34, y, left + gw + 37, y);
            snprintf(buf, sizeof buf, "%g", s->ticks[k]); svg_label(f, left + gw + 39, y + 3.5, 10, "start", NULL, buf);
        }
    else {
        snprintf(buf, sizeof buf, "%.3g", s->vmax); svg_label(f, left + gw + 38, top + 10, 10, "start", NULL, buf);
        snprintf(buf, sizeof buf, "%.3g", s->vmin); svg_label(f, left + gw + 38, top + gh, 10, "start", NULL, buf);
    }
    if (s->colorbar_label) {
        fprintf(f, "<g transform=\"translate(%.1f,%.1f) rotate(90)\">", left + gw + 78, top + gh / 2);
        svg_label(f, 0, 0, 11, "middle", NULL, s->colorbar_label);
        fputs("</g>\n", f);
    }
    fputs("</svg>\n", f);
    return SVG_FCLOSE(f);
}

/* Axes frame with ticks for x in [x0, x1], y in [y0, y1] inside (left, top, pw, ph). */
SVG_FN void svg_axes(FILE *f, double left, double top, double pw, double ph, double x0, double x1, double y0, double y1,
                     const char *xlabel, const char *ylabel, int numeric_x) {
    int k;
    char buf[32];
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", left, top, pw, ph);
    for (k = 0; k <= 4; k++) {
        double fx = left + pw * k / 4, fy = top + ph - ph * k / 4;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, fy, left + pw, fy);
        if (numeric_x) { snprintf(buf, sizeof buf, "%.3g", x0 + (x1 - x0) * k / 4); svg_label(f, fx, top + ph + 15, 10, "middle", NULL, buf); }
        snprintf(buf, sizeof buf, "%.3g", y0 + (y1 - y0) * k / 4); svg_label(f, left - 5, fy + 3, 10, "end", NULL, buf);
    }
    if (xlabel) svg_label(f, left + pw / 2, top + ph + 34, 12, "middle", NULL, xlabel);
    if (ylabel) {
        fprintf(f, "<g transform=\"translate(%.1f,%.1f) rotate(-90)\">", left - 40, top + ph / 2);
        svg_label(f, 0, 0, 12, "middle", NULL, ylabel);
        fputs("</g>\n", f);
    }
}

typedef struct {
    int n_series, n_points;
    const double *x;                 /* [n_points] shared x values */
    const double *y;                 /* [n_series, n_points]; NaN = gap */
    const char *const *names;        /* [n_series] legend */
    const char *const *x_labels;     /* [n_points] tick labels at the points, or NULL for numeric ticks */
    const char *title, *xlabel, *ylabel;
    double ymin, ymax;               /* ymin == ymax: from the data */
} svg_lines_spec;

SVG_FN void svg_range(const double *v, size_t n, double *lo, double *hi) {
    size_t i;
    *lo = INFINITY; *hi = -INFINITY;
    for (i = 0; i < n; i++) if (v[i] == v[i]) { if (v[i] < *lo) *lo = v[i]; if (v[i] > *hi) *hi = v[i]; }
    if (!(*lo <= *hi)) { *lo = 0; *hi = 1; }
    if (*hi == *lo) { *lo -= 0.5; *hi += 0.5; }
}

SVG_FN int svg_lines(const char *path, const svg_lines_spec *s) {
    double left = 64, top = s->title ? 40 : 16, pw = 520, ph = 300, x0, x1, y0 = s->ymin, y1 = s->ymax;
    FILE *f = SVG_FOPEN(path);
    int k, i;
    if (!f) return -1;
    svg_range(s->x, (size_t)s->n_points, &x0, &x1);
    if (y0 == y1) svg_range(s->y, (size_t)s->n_series * s->n_points, &y0, &y1);
    svg_begin(f, left + pw + 170, top + ph + 50);
    if (s->title) svg_label(f, left + pw / 2, 24, 15, "middle", "font-weight=\"bold\"", s->title);
    svg_axes(f, left, top, pw, ph, x0, x1, y0, y1, s->xlabel, s->ylabel, !s->x_labels);
    for (i = 0; s->x_labels && i < s->n_points; i++)
        svg_label(f, left + pw * (s->x[i] - x0) / (x1 - x0), top + ph + 15, 10, "middle", NULL, s->x_labels[i]);
    for (k = 0; k < s->n_series; k++) {
        int pen = 0;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", svg_series_colour(k));
        for (i = 0; i < s->n_points; i++) {
            double v = s->y[(size_t)k * s->n_points + i];
            if (v != v) { pen = 0; continue; }
            fprintf(f, "%c%.1f %.1f ", pen ? 'L' : 'M', left + pw * (s->x[i] - x0) / (x1 - x0), top + ph - ph * (v - y0) / (y1 - y0));
            pen = 1;
        }
        fputs("\"/>\n", f);
        for (i = 0; i < s->n_points; i++) {
            double v = s->y[(size_t)k * s->n_points + i];
            if (v == v) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", left + pw * (s->x[i] - x0) / (x1 - x0),
                                top + ph - ph * (v - y0) / (y1 - y0), svg_series_colour(k));
        }
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", left + pw + 14, top + 8 + 18.0 * k, svg_series_colour(k));
        if (s->names) svg_label(f, left + pw + 34, top + 14 + 18.0 * k, 11, "start", NULL, s->names[k]);
    }
    fputs("</svg>\n", f);
    return SVG_FCLOSE(f);
}

typedef struct {
    int n;
    const double *x, *y;             /* [n] */
    const int *group;                /* [n] colour group, or NULL */
    const char *const *group_names;  /* [n_groups] legend, or NULL */
    int n_groups;
    const char *title, *xlabel, *ylabel;
} svg_scatter_spec;

SVG_FN int svg_scatter(const char *path, const svg_scatter_spec *s) {
    double left = 64, top = s->title ? 40 : 16, pw = 420, ph = 420, x0, x1, y0, y1;
    FILE *f = SVG_FOPEN(path);
    int i;
    if (!f) return -1;
    svg_range(s->x, (size_t)s->n, &x0, &x1);
    svg_range(s->y, (size_t)s->n, &y0, &y1);
    svg_begin(f, left + pw + 170, top + ph + 50);
    if (s->title) svg_label(f, left + pw / 2, 24, 15, "middle", "font-weight=\"bold\"", s->title);
    svg_axes(f, left, top, pw, ph, x0, x1, y0, y1, s->xlabel, s->ylabel, 1);
    for (i = 0; i < s->n; i++)
        if (s->x[i] == s->x[i] && s->y[i] == s->y[i])
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" fill-opacity=\"0.75\"/>\n", left + pw * (s->x[i] - x0) / (x1 - x0),
                    top + ph - ph * (s->y[i] - y0) / (y1 - y0), svg_series_colour(s->group ? s->group[i] : 0));
    for (i = 0; i < s->n_groups && s->group_names; i++) {
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", left + pw + 20, top + 10 + 18.0 * i, svg_series_colour(i));
        svg_label(f, left + pw + 32, top + 14 + 18.0 * i, 11, "start", NULL, s->group_names[i]);
    }
    fputs("</svg>\n", f);
    return SVG_FCLOSE(f);
}

/* ---- values by position with 95% intervals (rates with a chance baseline) ---------------------- */

typedef struct {
    int n_series, n_points;
    const double *y, *lo, *hi;       /* [n_series, n_points]; NaN = no point / no interval */
    const int *colour;               /* [n_series] svg_series_colour index, or NULL (= series index) */
    const int *style;                /* [n_series] 0: line, points and error bars; 1: dashed line in a shaded band; NULL = 0 */
    const char *const *names;        /* [n_series] legend */
    const char *const *x_labels;     /* [n_points] */
    const char *title, *subtitle, *xlabel, *ylabel;
    int zero_based;                  /* the y axis starts at 0 (rates, entropies) */
    int percent;                     /* tick labels as percentages of 1 */
    double ymax_cap;                 /* > 0: the axis never goes past it (1 for rates) */
} svg_interval_spec;

/* A round tick step (1, 2, 2.5 or 5 x 10^e) giving about 5 ticks over range. */
SVG_FN double svg_nice_step(double range) {
    double raw = range > 0 ? range / 5 : 1, e = pow(10, floor(log10(raw))), f = raw / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
}

/* Width in px of text at font size px (DejaVu Sans averages about 0.6 em per character). */
SVG_FN double svg_text_width(const char *s, double px) {
    size_t n = 0;
    for (; s && *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return 0.62 * px * (double)n;
}

SVG_FN int svg_intervals(const char *path, const svg_interval_spec *s) {
    double lo_v = INFINITY, hi_v = -INFINITY, step, y0, y1, left, top, pw, ph = 300, legend_w = 0, w, h, label_w = 0, tick_w = 0;
    FILE *f;
    int k, i, n_ticks;
    char buf[48];
    for (k = 0; k < s->n_series * s->n_points; k++) {
        const double v[3] = { s->y[k], s->lo ? s->lo[k] : NAN, s->hi ? s->hi[k] : NAN };
        for (i = 0; i < 3; i++) if (v[i] == v[i]) { if (v[i] < lo_v) lo_v = v[i]; if (v[i] > hi_v) hi_v = v[i]; }
    }
    if (!(lo_v <= hi_v)) { lo_v = 0; hi_v = 1; }
    if (s->zero_based && lo_v > 0) lo_v = 0;
    if (hi_v == lo_v) hi_v = lo_v + (s->ymax_cap > 0 ? s->ymax_cap / 10 : 1);
    step = svg_nice_step(hi_v - lo_v);
    y0 = floor(lo_v / step + 1e-9) * step; y1 = ceil(hi_v / step - 1e-9) * step;
    if (s->ymax_cap > 0 && y1 > s->ymax_cap) y1 = s->ymax_cap;
    if (y1 <= y0) y1 = y0 + step;
    n_ticks = (int)floor((y1 - y0) / step + 1e-9);
    for (i = 0; i <= n_ticks; i++) {
        double v = y0 + i * step;
        if (s->percent) snprintf(buf, sizeof buf, "%g%%", 100 * v); else snprintf(buf, sizeof buf, "%g", v);
        if (svg_text_width(buf, 10) > tick_w) tick_w = svg_text_width(buf, 10);
    }
    for (k = 0; k < s->n_series && s->names; k++) if (svg_text_width(s->names[k], 11) + 44 > legend_w) legend_w = svg_text_width(s->names[k], 11) + 44;
    for (i = 0; i < s->n_points && s->x_labels; i++) if (svg_text_width(s->x_labels[i], 10) > label_w) label_w = svg_text_width(s->x_labels[i], 10);
    left = tick_w + 40;
    pw = s->n_points * (label_w + 16) > 480 ? s->n_points * (label_w + 16) : 480;
    top = s->title ? (s->subtitle ? 58 : 40) : 16;
    w = left + pw + legend_w + 20;
    if (s->title && svg_text_width(s->title, 15) * 1.08 + 40 > w) w = svg_text_width(s->title, 15) * 1.08 + 40;   /* bold is wider */
    if (s->subtitle && svg_text_width(s->subtitle, 11) + 40 > w) w = svg_text_width(s->subtitle, 11) + 40;
    h = top + ph + 52;
    if (!(f = SVG_FOPEN(path))) return -1;
    svg_begin(f, w, h);
    if (s->title) svg_label(f, w / 2, 22, 15, "middle", "font-weight=\"bold\"", s->title);
    if (s->subtitle) svg_label(f, w / 2, 40, 11, "middle", "fill=\"#444\"", s->subtitle);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", left, top, pw, ph);
    for (i = 0; i <= n_ticks; i++) {
        double v = y0 + i * step, fy = top + ph - ph * (v - y0) / (y1 - y0);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, fy, left + pw, fy);
        if (s->percent) snprintf(buf, sizeof buf, "%g%%", 100 * v); else snprintf(buf, sizeof buf, "%g", v);
        svg_label(f, left - 5, fy + 3, 10, "end", NULL, buf);
    }
    for (i = 0; i < s->n_points && s->x_labels; i++) svg_label(f, left + pw * (i + 0.5) / s->n_points, top + ph + 15, 10, "middle", NULL, s->x_labels[i]);
    if (s->xlabel) svg_label(f, left + pw / 2, top + ph + 36, 12, "middle", NULL, s->xlabel);
    if (s->ylabel) {
        fprintf(f, "<g transform=\"translate(%.1f,%.1f) rotate(-90)\">", 14.0, top + ph / 2);
        svg_label(f, 0, 0, 12, "middle", NULL, s->ylabel);
        fputs("</g>\n", f);
    }
    for (k = 0; k < s->n_series; k++) {
        const char *col = svg_series_colour(s->colour ? s->colour[k] : k);
        int band = s->style && s->style[k] == 1, pen = 0;
        double dx = band ? 0 : (k - (s->n_series - 1) / 2.0) * 3;     /* error bars side by side */
        const double *y = s->y + (size_t)k * s->n_points, *lo = s->lo ? s->lo + (size_t)k * s->n_points : NULL, *hi = s->hi ? s->hi + (size_t)k * s->n_points : NULL;
#define SVG_X(i) (left + pw * ((i) + 0.5) / s->n_points + dx)
#define SVG_Y(v) (top + ph - ph * ((v) - y0) / (y1 - y0))
        if (band && lo && hi) {
            fprintf(f, "<path fill=\"%s\" fill-opacity=\"0.15\" stroke=\"none\" d=\"", col);
            for (i = 0, pen = 0; i < s->n_points; i++) if (lo[i] == lo[i] && hi[i] == hi[i]) { fprintf(f, "%c%.1f %.1f ", pen ? 'L' : 'M', SVG_X(i), SVG_Y(hi[i])); pen = 1; }
            for (i = s->n_points - 1; i >= 0; i--) if (lo[i] == lo[i] && hi[i] == hi[i]) fprintf(f, "L%.1f %.1f ", SVG_X(i), SVG_Y(lo[i]));
            fputs("Z\"/>\n", f);
        }
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s d=\"", col, band ? " stroke-dasharray=\"6 4\"" : "");
        for (i = 0, pen = 0; i < s->n_points; i++) {
            if (y[i] != y[i]) { pen = 0; continue; }
            fprintf(f, "%c%.1f %.1f ", pen ? 'L' : 'M', SVG_X(i), SVG_Y(y[i]));
            pen = 1;
        }
        fputs("\"/>\n", f);
        for (i = 0; i < s->n_points && !band; i++) {
            if (y[i] != y[i]) continue;
            if (lo && hi && lo[i] == lo[i] && hi[i] == hi[i])
                fprintf(f, "<path stroke=\"%s\" stroke-width=\"1.3\" fill=\"none\" d=\"M%.1f %.1f L%.1f %.1f M%.1f %.1f L%.1f %.1f M%.1f %.1f L%.1f %.1f\"/>\n", col,
                        SVG_X(i), SVG_Y(lo[i]), SVG_X(i), SVG_Y(hi[i]), SVG_X(i) - 4, SVG_Y(lo[i]), SVG_X(i) + 4, SVG_Y(lo[i]), SVG_X(i) - 4, SVG_Y(hi[i]), SVG_X(i) + 4, SVG_Y(hi[i]));
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", SVG_X(i), SVG_Y(y[i]), col);
        }
#undef SVG_X
#undef SVG_Y
        fprintf(f, "<path stroke=\"%s\" stroke-width=\"2\"%s d=\"M%.1f %.1f h22\"/>\n", col, band ? " stroke-dasharray=\"6 4\"" : "", left + pw + 12, top + 10 + 18.0 * k);
        if (s->names) svg_label(f, left + pw + 40, top + 14 + 18.0 * k, 11, "start", NULL, s->names[k]);
    }
    fputs("</svg>\n", f);
    return SVG_FCLOSE(f);
}

#endif
