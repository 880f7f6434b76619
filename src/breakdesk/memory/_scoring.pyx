# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The batched search's scoring loop in C: `TenantIndex._score_chunk` with this extension built.

Why C: a query shares ~1,000 postings with a tenant's cases, and scoring them as numpy array operations
costs a dozen passes over every posting (concatenate, sort, scatter, gather, bincount...) plus a few numpy
calls per query: ~150 µs a query on the pipeline bench's replayed batches, most of the memory's cost in the
pipeline. One pass that adds each posting's weight into a per-case accumulator does the same in a few µs.

It reads the index's field postings where they are (`TenantIndex._fpost`, one `bytearray` of native int32
slots per field value): gathering them into numpy arrays first cost as much per query as scoring them.

The numbers are the numpy path's, bit for bit (tests compare both with `TenantIndex.search`): per case and
query, text sums the float32 products (list weight × BM25 norm) in float64 in list order, fields and keys
sum float32 weights in float64 (exact: see `_score_chunk`), and the fusion is float32 arithmetic in the
same order numpy evaluates it (weights as float32, the type and source boosts added in float64 and rounded).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.stdlib cimport calloc, free, realloc


cdef inline void _insert(float* top, int* filled, int k, float value) noexcept nogil:
    """Keep the `k` smallest values seen in `top`, ascending."""
    cdef int i = filled[0]
    if i == k:
        if value >= top[k - 1]:
            return
        i = k - 1
    else:
        filled[0] += 1
    while i > 0 and top[i - 1] > value:
        top[i] = top[i - 1]
        i -= 1
    top[i] = value


cdef struct Acc:
    # One case's sums and whether the query has touched it, side by side: a case's postings are scattered,
    # and one cache line per case visited instead of four is most of what the loop costs.
    double t
    double f
    double k
    int seen


cdef inline int _visit(Acc* acc, int s, int* touched, int nt) noexcept nogil:
    """Lists case `s` in `touched` the first time a query finds it; returns how many are listed."""
    if acc[s].seen:
        return nt
    acc[s].seen = 1
    touched[nt] = s
    return nt + 1


# Scratch arrays reused across calls, zero between calls (each query zeroes what it touched): allocating them
# per call costs page faults for every page touched, more than the scoring itself. Calls hold the GIL
# throughout, so one set serves every thread.
cdef Acc* _acc = NULL
cdef int* _touched = NULL
cdef float* _negs = NULL
cdef float* _top = NULL
cdef int* _low = NULL
cdef Py_ssize_t _cases = 0
cdef Py_ssize_t _ranks = 0
# one query's skipped lists: their `held` rows, field weights and declared key counts
cdef Py_ssize_t* _sk_row = NULL
cdef double* _sk_w = NULL
cdef double* _sk_c = NULL
cdef Py_ssize_t _sk_cap = 0


cdef int _reserve_skips(Py_ssize_t n) except -1:
    global _sk_row, _sk_w, _sk_c, _sk_cap
    if n <= _sk_cap:
        return 0
    cdef Py_ssize_t cap = max(n, 2 * _sk_cap, 16)
    cdef Py_ssize_t* rows = <Py_ssize_t*> realloc(_sk_row, cap * sizeof(Py_ssize_t))
    if rows == NULL:
        raise MemoryError()
    _sk_row = rows
    cdef double* ws = <double*> realloc(_sk_w, cap * sizeof(double))
    if ws == NULL:
        raise MemoryError()
    _sk_w = ws
    cdef double* cs = <double*> realloc(_sk_c, cap * sizeof(double))
    if cs == NULL:
        raise MemoryError()
    _sk_c = cs
    _sk_cap = cap
    return 0


cdef inline Py_ssize_t _tail(const int* data, Py_ssize_t size, int from_slot) noexcept nogil:
    """The first posting at slot `from_slot` or later (postings ascend): a list's part inside the window."""
    cdef Py_ssize_t lo = 0, hi = size, mid
    if from_slot <= 0 or size == 0 or data[0] >= from_slot:
        return 0
    while lo < hi:
        mid = (lo + hi) >> 1
        if data[mid] < from_slot:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void _release() noexcept:
    global _acc, _touched, _negs, _top, _low, _cases, _ranks
    free(_acc); free(_touched); free(_negs); free(_top); free(_low)
    _acc = NULL
    _touched = _low = NULL
    _negs = _top = NULL
    _cases = _ranks = 0


cdef int _reserve(Py_ssize_t n, Py_ssize_t k) except -1:
    """Scratch for `n` cases and `k` ranks (zeroed when new)."""
    global _acc, _touched, _negs, _top, _low, _cases, _ranks
    if n <= _cases and k <= _ranks:
        return 0
    cdef Py_ssize_t cases = max(n, 2 * _cases, 1024)
    cdef Py_ssize_t ranks = max(k, _ranks, 64)
    _release()
    _acc = <Acc*> calloc(cases, sizeof(Acc))
    _touched = <int*> calloc(cases, sizeof(int))
    _negs = <float*> calloc(cases, sizeof(float))
    _top = <float*> calloc(ranks, sizeof(float))
    _low = <int*> calloc(ranks, sizeof(int))
    if not (_acc and _touched and _negs and _top and _low):
        _release()
        raise MemoryError()
    _cases, _ranks = cases, ranks
    return 0


def score_queries(
    list fpost,
    list queries,
    const unsigned char[:, ::1] held,
    const unsigned char[::1] alive,
    const int[::1] types,
    const int[::1] sources,
    list eids,
    int from_slot,
    int k,
    bint ids_ascending,
    float w_text,
    float w_field,
    float w_key,
    double w_type,
    double w_source,
):
    """Per query: None when fewer than `k` live cases from slot `from_slot` on share a list with it, else (its
    k-th best score negated, its hits as (negated score, exception id `eids[slot]`, slot, normalised text
    score)).

    With `ids_ascending` (slots in id order, so ties rank by slot) the hits are the top k, ranked as
    `search` ranks them: by score, then id. Otherwise they are every case scoring at least the k-th best,
    unordered: the caller ranks them by id.

    A query is (texts, fields, keys, skip, skipped, type code, source code, field norm, key norm, has text):
    `texts` its words' (slots, BM25 norms, weight) from `from_slot` on; `fields` and `keys` its field
    values' (field id, weight, ...) — the postings `fpost[field id]`, but not those in `skip`; `skipped`
    the (row of `held`, field weight, declared key count) of each list it skips, whose shares go to every
    case it finds that holds them."""
    cdef Py_ssize_t n = len(eids)
    _reserve(n, 2 * k)
    cdef Acc* acc = _acc
    cdef Acc* a
    cdef int* touched = _touched
    cdef float* negs = _negs
    cdef float* top = _top
    cdef int* low = _low
    cdef int* best = _low + k  # the hits scoring above the k-th best, as indexes into `touched`
    cdef Py_ssize_t j, i, length, start, nsk
    cdef int s, nt, filled, want, m, slot, nb, qt, qs, kind
    cdef float w, tt, fn, kn, t, f, kk, score, kth, v
    cdef double boost, fsum, ksum
    cdef bint shared, has_text
    cdef const int* data
    cdef const int[::1] tdocs
    cdef const float[::1] tnorms
    cdef bytearray postings
    cdef dict skip
    results = []
    try:
        for query in queries:
            texts, qfields, qkeys, skip, skipped, qt, qs, fn, kn, has_text = query
            nt = 0
            for tdocs, tnorms, w in texts:
                for j in range(tdocs.shape[0]):
                    s = tdocs[j]
                    if alive[s]:
                        nt = _visit(acc, s, touched, nt)
                        acc[s].t += <double> (w * tnorms[j])
            kind = 1
            for group in (qfields, qkeys):
                for fl in group:
                    fid = fl[0]
                    if skip and fid in skip:
                        continue
                    w = <float> fl[1]
                    postings = fpost[<Py_ssize_t> fid]
                    data = <const int*> PyByteArray_AS_STRING(postings)
                    length = PyByteArray_GET_SIZE(postings) >> 2
                    start = _tail(data, length, from_slot)
                    for j in range(start, length):
                        s = data[j]
                        if not alive[s]:
                            continue
                        nt = _visit(acc, s, touched, nt)
                        a = &acc[s]
                        if kind == 1:
                            a.f += <double> w
                        else:
                            a.k += <double> w
                kind = 2
            nsk = len(skipped)
            _reserve_skips(nsk)
            i = 0
            for row, sw, sc in skipped:
                _sk_row[i] = row
                _sk_w[i] = sw
                _sk_c[i] = sc
                i += 1
            if nt < k:
                results.append(None)
            else:
                # The skipped lists' shares go to each case found (in list order, as numpy adds them), in
                # the pass that needs its sums next: the text maximum's when the query has words, else the
                # scoring's own.
                tt = 1.0
                shared = False
                if has_text:
                    v = 0.0
                    for j in range(nt):
                        a = &acc[touched[j]]
                        for i in range(nsk):
                            if held[_sk_row[i], touched[j]]:
                                a.f += _sk_w[i]
                                a.k += _sk_c[i]
                        t = <float> a.t
                        if j == 0 or t > v:
                            v = t
                    if v > 0:
                        tt = v
                    shared = True
                filled = 0
                for j in range(nt):
                    s = touched[j]
                    a = &acc[s]
                    fsum = a.f
                    ksum = a.k
                    if not shared:
                        for i in range(nsk):
                            if held[_sk_row[i], s]:
                                fsum += _sk_w[i]
                                ksum += _sk_c[i]
                    # (without words every text sum is 0, and 0 / 1 is 0: the division, dearest of the
                    # loop's operations, is left out where it cannot change the number)
                    t = (<float> a.t) / tt if has_text else 0.0
                    f = (<float> fsum) / fn
                    kk = (<float> ksum) / kn
                    score = w_text * t + w_field * f
                    score = score + w_key * kk
                    boost = (w_type if types[s] == qt else 0.0) + (w_source if sources[s] == qs else 0.0)
                    score = <float> (<double> score + boost)
                    negs[j] = -score
                    _insert(top, &filled, k, negs[j])
                kth = top[k - 1]
                hits = []
                if ids_ascending:
                    # The cases above the k-th best (fewer than k), ranked by score then slot, then the `want`
                    # lowest slots among those tied at it (ascending): the top k as `search` ranks them.
                    nb = 0
                    for j in range(nt):
                        if negs[j] < kth:
                            i = nb
                            nb += 1
                            while i > 0 and (negs[best[i - 1]] > negs[j] or (
                                    negs[best[i - 1]] == negs[j] and touched[best[i - 1]] > touched[j])):
                                best[i] = best[i - 1]
                                i -= 1
                            best[i] = <int> j
                    want = k - nb  # ties that make the top k
                    m = 0
                    for j in range(nt):
                        if negs[j] == kth:
                            slot = touched[j]
                            if m < want:
                                i = m
                                m += 1
                            elif slot < low[want - 1]:
                                i = want - 1
                            else:
                                continue
                            while i > 0 and low[i - 1] > slot:
                                low[i] = low[i - 1]
                                i -= 1
                            low[i] = slot
                    for i in range(nb):
                        j = best[i]
                        s = touched[j]
                        hits.append((<double> negs[j], eids[s], s, <double> ((<float> acc[s].t) / tt)))
                    for i in range(m):
                        s = low[i]
                        hits.append((<double> kth, eids[s], s, <double> ((<float> acc[s].t) / tt)))
                else:
                    for j in range(nt):
                        if negs[j] <= kth:
                            s = touched[j]
                            hits.append((<double> negs[j], eids[s], s, <double> ((<float> acc[s].t) / tt)))
                results.append((<double> kth, hits))
            for j in range(nt):  # the scratch is zero again for the next query
                a = &acc[touched[j]]
                a.seen = 0
                a.t = 0.0
                a.f = 0.0
                a.k = 0.0
    except BaseException:
        _release()  # whatever state the scratch was left in, the next call starts from zeros
        raise
    return results
