"""An experiment kept for its measurements (benchmarks/RESULTS.md, "Tried: one state per thread"): the four-route scan with the state held in registers (a tuple of N/NSPLIT values per thread, one channel per thread group) and time walked step by step. Correct (checked against the float64 reference on CPU and GPU) but slower than resvmamba.triton_scan at most shapes on an H100; not used by the library."""
import triton, triton.language as tl

@triton.jit
def _softplus(v):
    "log(1 + e^v) = max(v, 0) + log1p(e^-|v|); log1p(z) as log(u) + (z - (u - 1)) with u = 1 + z rounded (the rounding error added back)."
    z = tl.exp(-tl.abs(v))
    u = 1.0 + z
    return tl.maximum(v, 0.0) + tl.log(u) + (z - (u - 1.0))

@triton.jit
def _route_pixel(s, k, H, W, L):
    "Image offset of step s of route k (0 row-major, 1 column-major, 2 and 3 the same walked backwards)."
    s = tl.where(k >= 2, L - 1 - s, s)
    return tl.where(k % 2 == 1, (s % H) * W + s // H, s)

@triton.jit
def _next_pixel(p, k, W, L):
    "Image offset of the step after the one at p on route k (off the image after the last step, where it is masked)."
    p = p + tl.where(k >= 2, -1, 1) * tl.where(k % 2 == 1, W, 1)
    p = tl.where((k == 1) & (p >= L), p - L + 1, p)      # bottom of a column: top of the next
    return tl.where((k == 3) & (p < 0), p + L - 1, p)    # top of a column: bottom of the one before

@triton.jit
def _step_inputs(x_row, dt_row, p, m, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    "u, Δ before softplus, and Δ (zero where masked) at image offset p for the program's channels."
    u = tl.load(x_row + p, mask=m, other=0.0).to(ACC)
    v = tl.load(dt_row + p, mask=m, other=0.0).to(ACC)
    if HAS_BIAS: v = v + bias
    if SOFTPLUS: dt = _softplus(v)
    else: dt = v
    return u, v, tl.where(m, dt, 0.0)

@triton.jit(do_not_specialize=['Dm', 'H', 'W', 'L', 'n_chunks'])
def _fwd_seq(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, hs_ptr,
             Dm, H, W, L, n_chunks,
             N: tl.constexpr, NSPLIT: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
             HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE: tl.constexpr, ACC: tl.constexpr):
    NS: tl.constexpr = N // NSPLIT
    b = tl.program_id(1)
    d = (tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D))[:, None]    # (BD, 1): a channel per thread group
    sp = tl.arange(0, NSPLIT)[None, :]                                   # (1, NSPLIT): lanes that share a channel
    dm = d < Dm
    img = b.to(tl.int64) * Dm * L + d * L
    for k in range(4):
        bk = b.to(tl.int64) * 4 + k
        A2 = ()
        h = ()
        for j in tl.static_range(NS):
            A2 = A2 + (tl.load(A_ptr + (k * Dm + d) * N + j * NSPLIT + sp, mask=dm, other=0.0).to(ACC) * 1.4426950408889634,)
            h = h + (tl.zeros([BLOCK_D, NSPLIT], ACC),)
        if HAS_D: Dk = tl.load(D_ptr + k * Dm + d, mask=dm, other=0.0).to(ACC)
        if HAS_BIAS: bias = tl.load(bias_ptr + k * Dm + d, mask=dm, other=0.0).to(ACC)
        else: bias = tl.zeros([BLOCK_D, 1], ACC)
        x_row = x_ptr + img
        dt_row = dt_ptr + (bk * Dm + d) * L
        y_row = y_ptr + img
        B_row = B_ptr + (bk * N + sp) * L
        C_row = C_ptr + (bk * N + sp) * L
        for c in range(n_chunks):
            if SAVE:
                for j in tl.static_range(NS):
                    tl.store(hs_ptr + ((bk * n_chunks + c) * Dm + d) * N + j * NSPLIT + sp, h[j], mask=dm)
            p0 = _route_pixel(c * T, k, H, W, L)
            p = p0
            ys = ()
            for i in tl.static_range(T):                      # compute the chunk; no store in between, so loads run ahead
                ok = c * T + i < L
                m = dm & ok
                u, v, dt = _step_inputs(x_row, dt_row, p, m, bias, HAS_BIAS, SOFTPLUS, ACC)
                dtu = dt * u
                acc = tl.zeros([BLOCK_D, NSPLIT], ACC)
                hn = ()
                for j in tl.static_range(NS):
                    Bj = tl.load(B_row + j * NSPLIT * L + p, mask=ok, other=0.0).to(ACC)
                    Cj = tl.load(C_row + j * NSPLIT * L + p, mask=ok, other=0.0).to(ACC)
                    hj = tl.exp2(dt * A2[j]) * h[j] + dtu * Bj
                    acc += hj * Cj
                    hn = hn + (hj,)
                h = hn
                yk = tl.sum(acc, 1, keep_dims=True)
                if HAS_D: yk += Dk * u
                yk += tl.load(y_row + p, mask=m & (k > 0), other=0.0)   # add to the routes before
                ys = ys + (yk,)
                p = _next_pixel(p, k, W, L)
            p = p0
            for i in tl.static_range(T):                      # then write the chunk's outputs
                tl.store(y_row + p, ys[i], mask=dm & (c * T + i < L))
                p = _next_pixel(p, k, W, L)
        tl.debug_barrier()


@triton.jit(do_not_specialize=['Bsz', 'Dm', 'H', 'W', 'L', 'n_chunks'])
def _bwd_seq(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, hs_ptr, dy_ptr, ent_ptr,
             dx_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
             Bsz, Dm, H, W, L, n_chunks,
             N: tl.constexpr, NSPLIT: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr, TS: tl.constexpr,
             HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    NS: tl.constexpr = N // NSPLIT
    G: tl.constexpr = T // TS
    db, b = tl.program_id(0), tl.program_id(1)
    d = (db * BLOCK_D + tl.arange(0, BLOCK_D))[:, None]
    sp = tl.arange(0, NSPLIT)[None, :]
    dm = d < Dm
    img = b.to(tl.int64) * Dm * L + d * L
    x_row, dy_row, dx_row = x_ptr + img, dy_ptr + img, dx_ptr + img
    for k in range(4):
        bk = b.to(tl.int64) * 4 + k
        A2 = ()
        for j in tl.static_range(NS):
            A2 = A2 + (tl.load(A_ptr + (k * Dm + d) * N + j * NSPLIT + sp, mask=dm, other=0.0).to(ACC) * 1.4426950408889634,)
        if HAS_D: Dk = tl.load(D_ptr + k * Dm + d, mask=dm, other=0.0).to(ACC)
        else: Dk = tl.zeros([BLOCK_D, 1], ACC)
        if HAS_BIAS: bias = tl.load(bias_ptr + k * Dm + d, mask=dm, other=0.0).to(ACC)
        else: bias = tl.zeros([BLOCK_D, 1], ACC)
        dt_row = dt_ptr + (bk * Dm + d) * L
        ddt_row = ddt_ptr + (bk * Dm + d) * L
        B_row = B_ptr + (bk * N + sp) * L
        C_row = C_ptr + (bk * N + sp) * L
        part = ((db * Bsz * 4 + bk) * N + sp) * L                # this block's share of dB, dC
        gnext, dA = (), ()                                         # gnext = a_{s+1} g_{s+1}, entering from later steps
        for j in tl.static_range(NS):
            gnext = gnext + (tl.zeros([BLOCK_D, NSPLIT], ACC),)
            dA = dA + (tl.zeros([BLOCK_D, NSPLIT], ACC),)
        dD = tl.zeros([BLOCK_D, 1], ACC)
        dbias = tl.zeros([BLOCK_D, 1], ACC)
        for ci in range(n_chunks):
            c = n_chunks - 1 - ci                                  # chunks from last to first
            h = ()
            for j in tl.static_range(NS):
                h = h + (tl.load(hs_ptr + ((bk * n_chunks + c) * Dm + d) * N + j * NSPLIT + sp, mask=dm, other=0.0),)
            # forward again through the chunk, keeping (in a small scratch) the state where each group of TS steps starts
            ent = ent_ptr + (((b * tl.num_programs(0) + db) * G) * BLOCK_D + tl.arange(0, BLOCK_D)[:, None]) * N + sp
            for q in range(G):
                for j in tl.static_range(NS):
                    tl.store(ent + q * BLOCK_D * N + j * NSPLIT, h[j])
                if q < G - 1:
                    for i in tl.static_range(TS):
                        s = c * T + q * TS + i
                        m = dm & (s < L)
                        p = _route_pixel(s, k, H, W, L)
                        u, v, dt = _step_inputs(x_row, dt_row, p, m, bias, HAS_BIAS, SOFTPLUS, ACC)
                        hn = ()
                        for j in tl.static_range(NS):
                            Bj = tl.load(B_row + j * NSPLIT * L + p, mask=s < L, other=0.0).to(ACC)
                            hn = hn + (tl.exp2(dt * A2[j]) * h[j] + dt * u * Bj,)
                        h = hn
            for qq in range(G):
                q = G - 1 - qq                                     # groups from last to first
                # the group's states and decays, kept in registers
                h0 = ()
                for j in tl.static_range(NS):
                    h0 = h0 + (tl.load(ent + q * BLOCK_D * N + j * NSPLIT),)
                h = h0
                hk, ak = (), ()
                for i in tl.static_range(TS):
                    s = c * T + q * TS + i
                    m = dm & (s < L)
                    p = _route_pixel(s, k, H, W, L)
                    u, v, dt = _step_inputs(x_row, dt_row, p, m, bias, HAS_BIAS, SOFTPLUS, ACC)
                    hn, an = (), ()
                    for j in tl.static_range(NS):
                        Bj = tl.load(B_row + j * NSPLIT * L + p, mask=s < L, other=0.0).to(ACC)
                        aj = tl.exp2(dt * A2[j])
                        hn = hn + (aj * h[j] + dt * u * Bj,)
                        an = an + (aj,)
                    h = hn
                    hk = hk + (hn,)
                    ak = ak + (an,)
                # the adjoint, backwards through the group
                for i in tl.static_range(TS - 1, -1, -1):
                    s = c * T + q * TS + i
                    ok = s < L
                    m = dm & ok
                    p = _route_pixel(s, k, H, W, L)
                    u, v, dt = _step_inputs(x_row, dt_row, p, m, bias, HAS_BIAS, SOFTPLUS, ACC)
                    dy = tl.load(dy_row + p, mask=m, other=0.0).to(ACC)
                    dtu = dt * u
                    du_acc = tl.zeros([BLOCK_D, NSPLIT], ACC)
                    ddt_acc = tl.zeros([BLOCK_D, NSPLIT], ACC)
                    gn, dAn = (), ()
                    for j in tl.static_range(NS):
                        Bj = tl.load(B_row + j * NSPLIT * L + p, mask=ok, other=0.0).to(ACC)
                        Cj = tl.load(C_row + j * NSPLIT * L + p, mask=ok, other=0.0).to(ACC)
                        if i == 0: hprev = h0[j]
                        else: hprev = hk[i - 1][j]
                        g = Cj * dy + gnext[j]                       # g_s = C_s dy_s + a_{s+1} g_{s+1}
                        ga = g * ak[i][j] * hprev                    # g_s a_s h_{s-1}
                        dAn = dAn + (dA[j] + ga * dt,)
                        ddt_acc += ga * A2[j] * 0.6931471805599453 + g * Bj * u
                        du_acc += g * Bj
                        tl.store(dB_ptr + part + j * NSPLIT * L + p, tl.sum(g * dtu, 0, keep_dims=True), mask=ok)
                        tl.store(dC_ptr + part + j * NSPLIT * L + p, tl.sum(hk[i][j] * dy, 0, keep_dims=True), mask=ok)
                        gn = gn + (ak[i][j] * g,)
                    gnext, dA = gn, dAn
                    du = tl.sum(du_acc, 1, keep_dims=True) * dt + Dk * dy
                    ddt = tl.sum(ddt_acc, 1, keep_dims=True)
                    if SOFTPLUS: ddt = ddt * tl.sigmoid(v)
                    ddt = tl.where(m, ddt, 0.0)
                    dD += tl.where(m, dy * u, 0.0)
                    dbias += ddt
                    tl.store(ddt_row + p, ddt, mask=m)
                    du += tl.load(dx_row + p, mask=m & (k > 0), other=0.0)   # add to the routes before
                    tl.store(dx_row + p, du, mask=m)
        for j in tl.static_range(NS):
            tl.store(dA_ptr + (bk * Dm + d) * N + j * NSPLIT + sp, dA[j], mask=dm)
        tl.store(dD_ptr + bk * Dm + d, dD, mask=dm)
        tl.store(dbias_ptr + bk * Dm + d, dbias, mask=dm)
        tl.debug_barrier()
