//! Ridge (L2-penalised) logistic regression for adjusted odds ratios.

use crate::proportion::two_sided_z;
use crate::StatsError;

/// Options for [`fit_logistic_l2`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticOptions {
    /// Maximum number of Newton–Raphson iterations (default 100).
    pub max_iterations: u32,
    /// Convergence tolerance: stop when the largest coefficient change in an
    /// iteration is below `tolerance · (1 + max |coefficient|)` (default 1e-10).
    pub tolerance: f64,
}

impl Default for LogisticOptions {
    fn default() -> Self {
        Self {
            max_iterations: 100,
            tolerance: 1e-10,
        }
    }
}

/// The result of [`fit_logistic_l2`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticFit {
    /// `[β₀ (intercept), β₁, …, β_k]`, one per column of `x` after the intercept.
    pub coefficients: Vec<f64>,
    /// Standard errors from the inverse penalised Hessian, same order as
    /// `coefficients`; `f64::INFINITY` for constant columns (see `constant_columns`).
    pub standard_errors: Vec<f64>,
    /// Newton iterations performed.
    pub iterations: u32,
    /// Whether the tolerance was met within `max_iterations`.
    pub converged: bool,
    /// Unpenalised log-likelihood `Σ yᵢηᵢ − ln(1 + e^ηᵢ)` at the estimate.
    pub log_likelihood: f64,
    /// Indices (0-based, into the columns of `x`) of constant columns. They are
    /// not identifiable next to the intercept, so they are left out of the fit:
    /// coefficient `0.0` (odds ratio 1) and standard error `f64::INFINITY`.
    pub constant_columns: Vec<usize>,
}

impl LogisticFit {
    /// Adjusted odds ratios `exp(βⱼ)` for the columns of `x` (intercept excluded).
    pub fn odds_ratios(&self) -> Vec<f64> {
        self.coefficients.iter().skip(1).map(|b| b.exp()).collect()
    }

    /// Wald interval `exp(βⱼ ± z·SEⱼ)` of the adjusted odds ratio of column
    /// `column` of `x` (0-based, intercept excluded), with
    /// `z = Φ⁻¹(1 − (1 − confidence)/2)`. `None` for an out-of-range column;
    /// constant columns give `(0, ∞)`. Errors: `confidence` not in `(0, 1)`.
    pub fn odds_ratio_interval(
        &self,
        column: usize,
        confidence: f64,
    ) -> Result<Option<(f64, f64)>, StatsError> {
        let z = two_sided_z(confidence)?;
        let Some(index) = column.checked_add(1) else {
            return Ok(None);
        };
        let (Some(b), Some(se)) = (
            self.coefficients.get(index),
            self.standard_errors.get(index),
        ) else {
            return Ok(None);
        };
        Ok(Some(((b - z * se).exp(), (b + z * se).exp())))
    }
}

/// `(σ(x), ln(1 + e^x))` = `(1 / (1 + e^−x), softplus(x))` without
/// overflow, from one exponential.
fn sigmoid_softplus(x: f64) -> (f64, f64) {
    let e = (-x.abs()).exp();
    let mu = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (mu, x.max(0.0) + e.ln_1p())
}

/// In-place Cholesky factorisation `A = L Lᵀ` of a symmetric positive definite
/// `p × p` row-major matrix (lower triangle used and overwritten with `L`).
/// Fails when a pivot is not positive relative to its original diagonal entry
/// (the matrix is numerically singular).
fn cholesky(a: &mut [f64], p: usize) -> Result<(), StatsError> {
    for j in 0..p {
        let original = a[j * p + j];
        let mut diag = original;
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        if !diag.is_finite() || diag <= original * 1e-12 {
            return Err(StatsError::SingularMatrix);
        }
        let l_jj = diag.sqrt();
        a[j * p + j] = l_jj;
        for i in j + 1..p {
            let mut v = a[i * p + j];
            for k in 0..j {
                v -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = v / l_jj;
        }
    }
    Ok(())
}

/// Solves `L Lᵀ x = b` given the Cholesky factor from [`cholesky`].
fn cholesky_solve(l: &[f64], p: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..p {
        for k in 0..i {
            y[i] -= l[i * p + k] * y[k];
        }
        y[i] /= l[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            y[i] -= l[k * p + i] * y[k];
        }
        y[i] /= l[i * p + i];
    }
    y
}

/// The design of [`fit_logistic_l2_weighted`]: intercept plus the
/// non-constant columns, stored by rows of non-zero cells only (compressed
/// sparse rows), each row with the weight of its successes and its total
/// weight (grouped binomial rows: one row may stand for 3 successes and 5
/// failures with the same values). Hand-written rather than a sparse-matrix
/// crate: it is two loops. A mostly-zero design costs `Σᵢ nnzᵢ²/2` per
/// iteration instead of `n·p²/2`; skipping a zero cell skips adding an exact
/// zero, so the sums are those of the dense loop. (0/1 indicators have
/// their own, cheaper design: [`Indicators`].)
struct Design {
    /// Column of every non-zero cell, row after row, ascending within a
    /// row (the intercept's column 0 first).
    cols: Vec<u32>,
    /// The value of each cell of `cols`.
    vals: Vec<f64>,
    /// Row `i`'s cells are `starts[i]..starts[i + 1]`.
    starts: Vec<usize>,
    /// Per row: the weight of its successes (`Σ wᵢ yᵢ` of the observations
    /// it stands for)…
    positive: Vec<f64>,
    /// …and its total weight.
    total: Vec<f64>,
    p: usize,
}

/// The penalised log-likelihood at one β and, when asked for, its
/// gradient and negative Hessian.
struct Evaluation {
    objective: f64,
    /// The log-likelihood without the penalty.
    log_likelihood: f64,
    gradient: Vec<f64>,
    hessian: Vec<f64>,
}

/// Rows per chunk of the sums.
const HESSIAN_CHUNK: usize = 4096;

/// `part` over `0..n` in fixed chunks of `chunk` rows, in parallel, the
/// chunks' results added (`add`) in chunk order: the result is the same
/// whatever the number of threads, and one chunk is `part(0..n)` exactly.
fn sum_chunks<T: Send>(
    n: usize,
    chunk: usize,
    part: impl Fn(std::ops::Range<usize>) -> T + Sync,
    add: impl Fn(&mut T, T),
) -> T {
    use rayon::prelude::*;
    let chunks = n.div_ceil(chunk);
    if chunks <= 1 {
        return part(0..n);
    }
    let parts: Vec<T> = (0..chunks)
        .into_par_iter()
        .map(|c| part(c * chunk..((c + 1) * chunk).min(n)))
        .collect();
    let mut parts = parts.into_iter();
    let mut total = parts.next().expect("at least two chunks");
    for p in parts {
        add(&mut total, p);
    }
    total
}

/// The set bits of `x`, lowest first.
fn ones(mut x: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (x != 0).then(|| {
            let j = x.trailing_zeros() as usize;
            x &= x - 1;
            j
        })
    })
}

impl Design {
    fn new(p: usize) -> Self {
        Self {
            cols: Vec::new(),
            vals: Vec::new(),
            starts: vec![0],
            positive: Vec::new(),
            total: Vec::new(),
            p,
        }
    }

    /// Appends a row from its non-zero cells, by ascending column (the
    /// intercept cell is added first), its successes' weight and its total
    /// weight.
    fn push_row(&mut self, cells: impl IntoIterator<Item = (u32, f64)>, positive: f64, total: f64) {
        self.cols.push(0);
        self.vals.push(1.0);
        for (c, v) in cells {
            if v != 0.0 {
                self.cols.push(c);
                self.vals.push(v);
            }
        }
        self.starts.push(self.cols.len());
        self.positive.push(positive);
        self.total.push(total);
    }

    /// Row `i`'s non-zero cells: (columns, values).
    fn cells(&self, i: usize) -> (&[u32], &[f64]) {
        let r = self.starts[i]..self.starts[i + 1];
        (&self.cols[r.clone()], &self.vals[r])
    }

    fn eta_of(&self, i: usize, beta: &[f64]) -> f64 {
        let (cols, vals) = self.cells(i);
        cols.iter()
            .zip(vals)
            .map(|(&c, v)| v * beta[c as usize])
            .sum()
    }
}

impl Evaluation {
    /// The penalty on the sums of the log-likelihood (`ll`) and, when not
    /// empty, its gradient and the lower triangle of its negative Hessian
    /// (mirrored into the upper one here).
    fn penalised(ll: f64, mut g: Vec<f64>, mut h: Vec<f64>, beta: &[f64], lambda: f64) -> Self {
        let p = beta.len();
        let penalty = 0.5 * lambda * beta[1..].iter().map(|b| b * b).sum::<f64>();
        if !g.is_empty() {
            for j in 1..p {
                g[j] -= lambda * beta[j];
                h[j * p + j] += lambda;
            }
            for r in 0..p {
                for c in r + 1..p {
                    h[r * p + c] = h[c * p + r];
                }
            }
        }
        Evaluation {
            objective: ll - penalty,
            log_likelihood: ll,
            gradient: g,
            hessian: h,
        }
    }
}

/// What Newton–Raphson needs of a design: its number of coefficients and
/// the evaluation at one β.
trait Model: Sync {
    fn coefficients(&self) -> usize;
    fn evaluate(&self, beta: &[f64], lambda: f64, derivatives: bool) -> Evaluation;
}

impl Model for Design {
    fn coefficients(&self) -> usize {
        self.p
    }

    /// The penalised log-likelihood (the intercept, index 0, is not
    /// penalised) at `beta`, with its gradient and negative Hessian when
    /// `derivatives` (empty otherwise), in one pass over the rows.
    ///
    /// Summed over chunks of [`HESSIAN_CHUNK`] rows ([`sum_chunks`]).
    fn evaluate(&self, beta: &[f64], lambda: f64, derivatives: bool) -> Evaluation {
        let p = self.p;
        let dim = if derivatives { p } else { 0 };
        let partial = |rows: std::ops::Range<usize>| {
            let mut ll = 0.0;
            let mut g = vec![0.0; dim];
            let mut h = vec![0.0; dim * dim];
            for i in rows {
                let eta = self.eta_of(i, beta);
                let (mu, softplus) = sigmoid_softplus(eta);
                let (pos, tot) = (self.positive[i], self.total[i]);
                ll += pos * eta - tot * softplus;
                if !derivatives {
                    continue;
                }
                let resid = pos - tot * mu;
                let w = tot * mu * (1.0 - mu);
                let (cols, vals) = self.cells(i);
                for (a, (&r, &xr)) in cols.iter().zip(vals).enumerate() {
                    let r = r as usize;
                    g[r] += xr * resid;
                    let wr = w * xr;
                    if wr != 0.0 {
                        let row = &mut h[r * p..r * p + p];
                        for (&c, &xc) in cols[..=a].iter().zip(&vals[..=a]) {
                            row[c as usize] += wr * xc;
                        }
                    }
                }
            }
            (ll, g, h)
        };
        let n = self.positive.len();
        let add = |a: &mut (f64, Vec<f64>, Vec<f64>), b: (f64, Vec<f64>, Vec<f64>)| {
            a.0 += b.0;
            a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
            a.2.iter_mut().zip(&b.2).for_each(|(x, y)| *x += y);
        };
        let (ll, g, h) = sum_chunks(n, HESSIAN_CHUNK, partial, add);
        Evaluation::penalised(ll, g, h, beta, lambda)
    }
}

/// Grouped rows of 0/1 indicators, each row a bitmask over the `k`
/// columns after the intercept (bit `j` = column `j + 1`), with the weight
/// of its successes and its total weight.
///
/// A row's sums are taken a byte of the mask at a time through tables of
/// 256 entries: η is the intercept plus one lookup per byte; the gradient
/// and the Hessian's blocks within a byte add the row's weight to one
/// table entry per byte; the blocks across two bytes add it once per set
/// bit and higher byte. The tables are expanded into the Hessian once per
/// pass. A row of 20 columns with 9 set bits costs ~15 additions instead of
/// the ~55 of a sparse row (the fit is most of an events correlation).
struct Indicators {
    masks: Vec<u64>,
    positive: Vec<f64>,
    total: Vec<f64>,
    /// Indicator columns (≤ 64).
    k: usize,
}

/// Rows per chunk of the indicator sums (larger than [`HESSIAN_CHUNK`]:
/// each chunk carries tables of a few thousand entries).
const INDICATOR_CHUNK: usize = 32768;

/// The sums of a chunk of indicator rows.
struct IndicatorSums {
    ll: f64,
    /// Σ weight and Σ residual over the rows.
    weight: f64,
    resid: f64,
    /// `[byte][value]`: Σ residual (gradient) and Σ weight (Hessian within a
    /// byte) of the rows with that byte value.
    resid_by_byte: Vec<[f64; 256]>,
    weight_by_byte: Vec<[f64; 256]>,
    /// `[bit][byte][value]`: Σ weight of the rows with that bit set and that
    /// value of a higher byte (Hessian across bytes).
    cross: Vec<[f64; 256]>,
}

impl Indicators {
    fn bytes(&self) -> usize {
        self.k.div_ceil(8)
    }

    fn sums(
        &self,
        rows: std::ops::Range<usize>,
        eta_by_byte: &[[f64; 256]],
        beta0: f64,
        derivatives: bool,
    ) -> IndicatorSums {
        let nb = self.bytes();
        let tables = if derivatives { nb } else { 0 };
        let mut out = IndicatorSums {
            ll: 0.0,
            weight: 0.0,
            resid: 0.0,
            resid_by_byte: vec![[0.0; 256]; tables],
            weight_by_byte: vec![[0.0; 256]; tables],
            cross: vec![[0.0; 256]; if derivatives { self.k * nb } else { 0 }],
        };
        for i in rows {
            let m = self.masks[i];
            let mut eta = beta0;
            for (b, table) in eta_by_byte.iter().enumerate() {
                eta += table[((m >> (8 * b)) & 0xff) as usize];
            }
            let (mu, softplus) = sigmoid_softplus(eta);
            let (pos, tot) = (self.positive[i], self.total[i]);
            out.ll += pos * eta - tot * softplus;
            if !derivatives {
                continue;
            }
            let resid = pos - tot * mu;
            let w = tot * mu * (1.0 - mu);
            out.weight += w;
            out.resid += resid;
            for b in 0..nb {
                let v = ((m >> (8 * b)) & 0xff) as usize;
                out.resid_by_byte[b][v] += resid;
                out.weight_by_byte[b][v] += w;
            }
            // Across bytes: each set bit with every higher byte's value.
            for j in ones(m) {
                for b in j / 8 + 1..nb {
                    out.cross[j * nb + b][((m >> (8 * b)) & 0xff) as usize] += w;
                }
            }
        }
        out
    }

    fn add(a: &mut IndicatorSums, b: IndicatorSums) {
        a.ll += b.ll;
        a.weight += b.weight;
        a.resid += b.resid;
        let tables = a
            .resid_by_byte
            .iter_mut()
            .zip(&b.resid_by_byte)
            .chain(a.weight_by_byte.iter_mut().zip(&b.weight_by_byte))
            .chain(a.cross.iter_mut().zip(&b.cross));
        for (x, y) in tables {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
    }
}

impl Model for Indicators {
    fn coefficients(&self) -> usize {
        self.k + 1
    }

    fn evaluate(&self, beta: &[f64], lambda: f64, derivatives: bool) -> Evaluation {
        let (p, k, nb) = (self.k + 1, self.k, self.bytes());
        // η of each byte value: the sum of the coefficients of its bits.
        let mut eta_by_byte = vec![[0.0; 256]; nb];
        for (b, table) in eta_by_byte.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (0..8)
                    .filter(|&j| v >> j & 1 == 1 && 8 * b + j < k)
                    .map(|j| beta[1 + 8 * b + j])
                    .sum();
            }
        }
        let part = |rows| self.sums(rows, &eta_by_byte, beta[0], derivatives);
        let total = sum_chunks(self.masks.len(), INDICATOR_CHUNK, part, Indicators::add);
        if !derivatives {
            return Evaluation::penalised(total.ll, Vec::new(), Vec::new(), beta, lambda);
        }
        // Expand the tables (lower triangle of h; column 0 is the intercept).
        let mut g = vec![0.0; p];
        let mut h = vec![0.0; p * p];
        g[0] = total.resid;
        h[0] = total.weight;
        for b in 0..nb {
            // Values of this byte's columns only (the last byte may be short).
            for v in 1..1u64 << (k - 8 * b).min(8) {
                let (r, w) = (
                    total.resid_by_byte[b][v as usize],
                    total.weight_by_byte[b][v as usize],
                );
                for j in ones(v) {
                    let row = 1 + 8 * b + j;
                    g[row] += r;
                    h[row * p] += w;
                    // Within the byte: bit j with itself and the bits below.
                    for i in ones(v & ((2 << j) - 1)) {
                        h[row * p + 1 + 8 * b + i] += w;
                    }
                }
            }
        }
        for j in 0..k {
            for b in j / 8 + 1..nb {
                let values = &total.cross[j * nb + b][..1 << (k - 8 * b).min(8)];
                for (v, &w) in values.iter().enumerate() {
                    for i in ones(v as u64) {
                        h[(1 + 8 * b + i) * p + 1 + j] += w;
                    }
                }
            }
        }
        Evaluation::penalised(total.ll, g, h, beta, lambda)
    }
}

/// Ridge (L2-penalised) logistic regression by Newton–Raphson (IRLS) with
/// step halving.
///
/// Model: `P(yᵢ) = σ(β₀ + Σⱼ βⱼ xᵢⱼ)`. The estimate maximises the penalised
/// log-likelihood (e.g. Hastie, Tibshirani & Friedman, *ESL* §4.4.4; le Cessie
/// & van Houwelingen 1992)
///
/// ```text
/// ℓ_λ(β) = Σᵢ [yᵢ ηᵢ − ln(1 + e^ηᵢ)] − (λ/2) Σ_{j>=1} βⱼ²
/// ```
///
/// with the intercept `β₀` not penalised and the penalty on the *sum* (not the
/// mean) of the log-likelihood. Equivalences: scikit-learn
/// `LogisticRegression(C=1/λ)` (l2, lbfgs, intercept unpenalised);
/// statsmodels `GLM(y, X, family=Binomial()).fit_regularized(alpha=[0] + [λ/n]*k,
/// L1_wt=0)` (statsmodels divides the log-likelihood by `n`); `λ = 0` is the
/// plain maximum-likelihood `Logit(y, X).fit()`.
///
/// Each iteration solves `(XᵀWX + λĨ) δ = Xᵀ(y − μ) − λβ̃` by Cholesky
/// (`Ĩ`/`β̃`: identity/coefficients with the intercept entry zeroed) and halves
/// the step until the objective does not decrease. Standard errors are
/// `sqrt(diag((XᵀWX + λĨ)⁻¹))` at the estimate (the inverse penalised
/// Hessian). Adjusted odds ratios are `exp(βⱼ)` ([`LogisticFit::odds_ratios`]).
///
/// `x` holds one row of `k` predictors per observation (no intercept column;
/// `k` up to a few dozen is the intended size: the cost is O(n·k²) per
/// iteration). The penalty is scale-dependent, so predictors should be on
/// comparable scales (0/1 indicators are). Constant columns are left out (see
/// [`LogisticFit::constant_columns`]). With `λ > 0` separable data still has a
/// finite estimate.
///
/// Errors: empty input; ragged rows or `y.len() != x.len()`; non-finite
/// values; `λ` negative or non-finite; all `y` equal
/// ([`StatsError::DegenerateResponse`]: the unpenalised intercept diverges);
/// a singular Hessian ([`StatsError::SingularMatrix`]: collinear columns or
/// separation with `λ = 0`). A fit that needs more than `max_iterations` is
/// returned with `converged = false`.
pub fn fit_logistic_l2<R: AsRef<[f64]>>(
    x: &[R],
    y: &[bool],
    lambda: f64,
    options: &LogisticOptions,
) -> Result<LogisticFit, StatsError> {
    fit_logistic_l2_weighted(x, y, &vec![1.0; x.len()], lambda, options)
}

/// [`fit_logistic_l2`] with frequency weights: row `i` stands for
/// `weights[i]` identical observations (so grouping identical rows and
/// fitting their counts gives the same estimate as fitting every row, at the
/// cost of the distinct rows only). Weights must be finite and ≥ 0.
pub fn fit_logistic_l2_weighted<R: AsRef<[f64]>>(
    x: &[R],
    y: &[bool],
    weights: &[f64],
    lambda: f64,
    options: &LogisticOptions,
) -> Result<LogisticFit, StatsError> {
    check_inputs(x.len(), y, weights, lambda, options)?;
    let k = x[0].as_ref().len();
    for row in x {
        let row = row.as_ref();
        if row.len() != k {
            return Err(StatsError::DimensionMismatch {
                what: "row length",
                expected: k,
                found: row.len(),
            });
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(StatsError::NonFinite("x"));
        }
    }
    let positive: Vec<f64> = y
        .iter()
        .zip(weights)
        .map(|(&yi, &w)| if yi { w } else { 0.0 })
        .collect();
    let mean_y = mean_response(&positive, weights)?;
    let first = x[0].as_ref();
    let (constant_columns, kept): (Vec<usize>, Vec<usize>) =
        (0..k).partition(|&j| x.iter().all(|row| row.as_ref()[j] == first[j]));
    let mut design = Design::new(kept.len() + 1);
    for ((row, &pos), &w) in x.iter().zip(&positive).zip(weights) {
        let row = row.as_ref();
        let cells = kept
            .iter()
            .enumerate()
            .map(|(c, &j)| (c as u32 + 1, row[j]));
        design.push_row(cells, pos, w);
    }
    let columns = Columns {
        k,
        kept,
        constant: constant_columns,
    };
    fit_design(&design, lambda, options, mean_y, columns)
}

/// [`fit_logistic_l2_weighted`] for grouped observations of 0/1 indicators:
/// row `i` has the indicators set in bitmask `masks[i]` (bit `j` is column
/// `j`, `columns` ≤ 64) and stands for `successes[i]` observations with
/// `y = true` and `failures[i]` with `y = false`. The same estimate as the
/// dense call with one row per (mask, outcome), to rounding, at the cost of
/// one row per mask and of its set bits.
///
/// Errors: as [`fit_logistic_l2_weighted`], with `successes` and
/// `failures` in the place of `y` and the weights; more than 64 columns.
pub fn fit_logistic_l2_indicators(
    masks: &[u64],
    columns: usize,
    successes: &[f64],
    failures: &[f64],
    lambda: f64,
    options: &LogisticOptions,
) -> Result<LogisticFit, StatsError> {
    if columns > 64 {
        return Err(StatsError::InvalidParameter {
            name: "columns",
            reason: "at most 64 indicator columns",
        });
    }
    for (what, counts) in [("successes", successes), ("failures", failures)] {
        if counts.len() != masks.len() {
            return Err(StatsError::DimensionMismatch {
                what: "successes/failures length vs masks",
                expected: masks.len(),
                found: counts.len(),
            });
        }
        if counts.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(StatsError::NonFinite(what));
        }
    }
    check_options(lambda, options)?;
    if masks.is_empty() {
        return Err(StatsError::EmptyInput("observations"));
    }
    let total: Vec<f64> = successes.iter().zip(failures).map(|(s, f)| s + f).collect();
    let mean_y = mean_response(successes, &total)?;
    let all = masks.iter().fold(u64::MAX, |a, m| a & m);
    let any = masks.iter().fold(0, |a, m| a | m);
    let (constant_columns, kept): (Vec<usize>, Vec<usize>) =
        (0..columns).partition(|&j| (all >> j) & 1 == (any >> j) & 1);
    // The kept columns' bits, packed: bit c of a row is design column c + 1.
    let design = Indicators {
        masks: masks
            .iter()
            .map(|&m| {
                kept.iter()
                    .enumerate()
                    .fold(0u64, |acc, (c, &j)| acc | ((m >> j) & 1) << c)
            })
            .collect(),
        positive: successes.to_vec(),
        total,
        k: kept.len(),
    };
    let columns = Columns {
        k: columns,
        kept,
        constant: constant_columns,
    };
    fit_design(&design, lambda, options, mean_y, columns)
}

/// The checks every fit makes of its `n` rows' responses and weights, and
/// of `lambda` and the options.
fn check_inputs(
    n: usize,
    y: &[bool],
    weights: &[f64],
    lambda: f64,
    options: &LogisticOptions,
) -> Result<(), StatsError> {
    if weights.len() != n {
        return Err(StatsError::DimensionMismatch {
            what: "weights length vs x rows",
            expected: n,
            found: weights.len(),
        });
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(StatsError::NonFinite("weights"));
    }
    check_options(lambda, options)?;
    if n == 0 {
        return Err(StatsError::EmptyInput("observations"));
    }
    if y.len() != n {
        return Err(StatsError::DimensionMismatch {
            what: "y length vs x rows",
            expected: n,
            found: y.len(),
        });
    }
    Ok(())
}

fn check_options(lambda: f64, options: &LogisticOptions) -> Result<(), StatsError> {
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(StatsError::InvalidParameter {
            name: "lambda",
            reason: "must be finite and >= 0",
        });
    }
    if options.tolerance.is_nan() || options.tolerance < 0.0 {
        return Err(StatsError::InvalidParameter {
            name: "tolerance",
            reason: "must be >= 0",
        });
    }
    Ok(())
}

/// The weighted share of positive responses (`positive[i]` of `total[i]`
/// per row); errors when all responses are equal (the unpenalised
/// intercept would diverge).
fn mean_response(positive: &[f64], total: &[f64]) -> Result<f64, StatsError> {
    let positives: f64 = positive.iter().sum();
    let total: f64 = total.iter().sum();
    if positives <= 0.0 || positives >= total {
        return Err(StatsError::DegenerateResponse);
    }
    Ok(positives / total)
}

/// Where the design's columns come from.
struct Columns {
    /// Columns of the caller's `x` (intercept excluded).
    k: usize,
    /// The `x` column of each design column after the intercept.
    kept: Vec<usize>,
    /// The constant `x` columns, left out of the design.
    constant: Vec<usize>,
}

/// Newton–Raphson on a built design, starting from the intercept-only
/// estimate `logit(mean_y)`. A full Newton step is evaluated with the
/// derivatives the next step needs, in one pass; only a halved step, which
/// may be refused, is first evaluated without them.
fn fit_design(
    design: &impl Model,
    lambda: f64,
    options: &LogisticOptions,
    mean_y: f64,
    columns: Columns,
) -> Result<LogisticFit, StatsError> {
    let p = design.coefficients();
    let mut beta = vec![0.0; p];
    beta[0] = (mean_y / (1.0 - mean_y)).ln();
    let mut at = design.evaluate(&beta, lambda, true);
    let mut converged = false;
    let mut iterations = 0;
    while iterations < options.max_iterations {
        iterations += 1;
        let mut h = at.hessian.clone();
        cholesky(&mut h, p)?;
        let delta = cholesky_solve(&h, p, &at.gradient);
        let improves = |e: &Evaluation| {
            e.objective.is_finite() && e.objective >= at.objective - 1e-12 * at.objective.abs()
        };
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let cand: Vec<f64> = beta.iter().zip(&delta).map(|(b, d)| b + step * d).collect();
            let e = design.evaluate(&cand, lambda, step == 1.0);
            if improves(&e) {
                let e = if step == 1.0 {
                    e
                } else {
                    design.evaluate(&cand, lambda, true)
                };
                accepted = Some((cand, e));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, e)) = accepted else {
            // No step improves the objective: we are at the optimum to machine precision.
            converged = true;
            break;
        };
        let change = beta
            .iter()
            .zip(&cand)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        let scale = 1.0 + cand.iter().map(|b| b.abs()).fold(0.0f64, f64::max);
        beta = cand;
        at = e;
        if change <= options.tolerance * scale {
            converged = true;
            break;
        }
    }

    let mut h = at.hessian;
    cholesky(&mut h, p)?;
    let mut se_kept = Vec::with_capacity(p);
    let mut unit = vec![0.0; p];
    for j in 0..p {
        unit[j] = 1.0;
        let col = cholesky_solve(&h, p, &unit);
        unit[j] = 0.0;
        se_kept.push(col[j].max(0.0).sqrt());
    }
    let mut coefficients = vec![0.0; columns.k + 1];
    let mut standard_errors = vec![f64::INFINITY; columns.k + 1];
    coefficients[0] = beta[0];
    standard_errors[0] = se_kept[0];
    for (slot, &j) in columns.kept.iter().enumerate() {
        coefficients[j + 1] = beta[slot + 1];
        standard_errors[j + 1] = se_kept[slot + 1];
    }
    Ok(LogisticFit {
        coefficients,
        standard_errors,
        iterations,
        converged,
        log_likelihood: at.log_likelihood,
        constant_columns: columns.constant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The chunked, parallel sums agree with one serial pass over the rows
    /// (to rounding: the order of additions differs), and repeat exactly.
    #[test]
    fn chunked_gradient_and_hessian_match_a_serial_pass() {
        let p = 6;
        let n = 3 * HESSIAN_CHUNK + 17;
        // A deterministic mix of 0/1 indicators and a few real values.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut rows = Vec::with_capacity(n * p);
        let mut y = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        for _ in 0..n {
            rows.push(1.0);
            for j in 1..p {
                let v = next();
                rows.push(if j == p - 1 {
                    (v % 1000) as f64 / 250.0
                } else {
                    (v % 2) as f64
                });
            }
            y.push(next() % 3 == 0);
            weights.push((next() % 5 + 1) as f64);
        }
        let mut d = Design::new(p);
        for (i, row) in rows.chunks(p).enumerate() {
            let pos = if y[i] { weights[i] } else { 0.0 };
            d.push_row((1..p).map(|c| (c as u32, row[c])), pos, weights[i]);
        }
        let beta = [-0.3, 0.2, -0.1, 0.4, 0.05, -0.2];
        let e = d.evaluate(&beta, 0.5, true);
        let e2 = d.evaluate(&beta, 0.5, true);
        let (g, h) = (&e.gradient, &e.hessian);
        assert_eq!(
            (g, h),
            (&e2.gradient, &e2.hessian),
            "the same inputs give the same bits"
        );
        let plain = d.evaluate(&beta, 0.5, false);
        assert_eq!(plain.objective, e.objective);
        assert!(plain.gradient.is_empty() && plain.hessian.is_empty());
        // Serial reference.
        let mut sll = 0.0;
        let mut sg = vec![0.0; p];
        let mut sh = vec![0.0; p * p];
        for (i, &yi) in y.iter().enumerate() {
            let row = &rows[i * p..(i + 1) * p];
            let e: f64 = row.iter().zip(&beta).map(|(x, b)| x * b).sum();
            let mu = 1.0 / (1.0 + (-e).exp());
            sll += weights[i] * (if yi { e } else { 0.0 } - (1.0 + e.exp()).ln());
            let resid = weights[i] * (if yi { 1.0 } else { 0.0 } - mu);
            let w = weights[i] * mu * (1.0 - mu);
            for r in 0..p {
                sg[r] += row[r] * resid;
                for c in 0..p {
                    sh[r * p + c] += w * row[r] * row[c];
                }
            }
        }
        for j in 1..p {
            sg[j] -= 0.5 * beta[j];
            sh[j * p + j] += 0.5;
        }
        for (a, b) in g.iter().zip(&sg).chain(h.iter().zip(&sh)) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
        let penalty = 0.25 * beta[1..].iter().map(|b| b * b).sum::<f64>();
        assert!((e.log_likelihood - sll).abs() <= 1e-9 * sll.abs());
        assert!((e.objective - (sll - penalty)).abs() <= 1e-9 * sll.abs());
    }

    /// Indicator sums over several chunks (added in chunk order) agree with
    /// the sparse design's, and repeat to the bit.
    #[test]
    fn indicator_chunks_add_up() {
        let (n, k) = (2 * INDICATOR_CHUNK + 5, 21);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut sparse = Design::new(k + 1);
        let mut ind = Indicators {
            masks: Vec::new(),
            positive: Vec::new(),
            total: Vec::new(),
            k,
        };
        for _ in 0..n {
            let m = next() & next() & ((1 << k) - 1);
            let (s, f) = ((next() % 3) as f64, (next() % 4) as f64);
            let cells = (0..k).filter(|&j| (m >> j) & 1 == 1);
            sparse.push_row(cells.map(|j| (j as u32 + 1, 1.0)), s, s + f);
            ind.masks.push(m);
            ind.positive.push(s);
            ind.total.push(s + f);
        }
        let beta: Vec<f64> = (0..=k).map(|j| (j as f64 - 10.0) / 7.0).collect();
        let a = Model::evaluate(&sparse, &beta, 0.7, true);
        let b = Model::evaluate(&ind, &beta, 0.7, true);
        let again = Model::evaluate(&ind, &beta, 0.7, true);
        assert_eq!((&b.gradient, &b.hessian), (&again.gradient, &again.hessian));
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
        assert!(close(a.objective, b.objective));
        let pairs = a.gradient.iter().zip(&b.gradient);
        for (x, y) in pairs.chain(a.hessian.iter().zip(&b.hessian)) {
            assert!(close(*x, *y), "{x} vs {y}");
        }
    }

    /// A dense loop over every cell, zeros too, with grouped rows
    /// (`positive` of `total` weight).
    fn dense_gradient_hessian(
        rows: &[f64],
        p: usize,
        positive: &[f64],
        total: &[f64],
        beta: &[f64],
        lambda: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut g = vec![0.0; p];
        let mut h = vec![0.0; p * p];
        for (i, row) in rows.chunks(p).enumerate() {
            let eta: f64 = row.iter().zip(beta).map(|(x, b)| x * b).sum();
            let mu = sigmoid_softplus(eta).0;
            let resid = positive[i] - total[i] * mu;
            let w = total[i] * mu * (1.0 - mu);
            for r in 0..p {
                g[r] += row[r] * resid;
                let wr = w * row[r];
                if wr != 0.0 {
                    for c in 0..=r {
                        h[r * p + c] += wr * row[c];
                    }
                }
            }
        }
        let e = Evaluation::penalised(0.0, g, h, beta, lambda);
        (e.gradient, e.hessian)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_binary_designs_never_panic(
            data in proptest::collection::vec((proptest::collection::vec(0u8..2, 3), any::<bool>()), 1..40),
            lambda in prop_oneof![Just(0.0), 0.01f64..10.0],
        ) {
            let x: Vec<Vec<f64>> = data.iter().map(|(r, _)| r.iter().map(|&v| f64::from(v)).collect()).collect();
            let y: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
            if let Ok(fit) = fit_logistic_l2(&x, &y, lambda, &LogisticOptions::default()) {
                prop_assert!(fit.coefficients.iter().all(|b| b.is_finite()));
                prop_assert!(fit.standard_errors.iter().all(|s| !s.is_nan()));
                if lambda > 0.0 {
                    prop_assert!(fit.converged);
                }
            }
        }

        /// Skipping zero cells adds nothing: the sparse sums are the dense
        /// loop's to the bit (one chunk), with 0/1 and real cells.
        #[test]
        fn sparse_sums_equal_the_dense_loop(
            data in proptest::collection::vec(
                (proptest::collection::vec(prop_oneof![3 => Just(0.0), 2 => Just(1.0), 1 => -3.0f64..3.0], 5), 0u8..4, 0u8..4),
                1..200),
            beta in proptest::collection::vec(-2.0f64..2.0, 6),
            lambda in 0.0f64..3.0,
        ) {
            let p = 6;
            let mut rows = Vec::new();
            let mut d = Design::new(p);
            for (cells, s, f) in &data {
                rows.push(1.0);
                rows.extend(cells);
                let (s, f) = (f64::from(*s), f64::from(*f));
                d.push_row(cells.iter().enumerate().map(|(c, &v)| (c as u32 + 1, v)), s, s + f);
            }
            let e = d.evaluate(&beta, lambda, true);
            let (dg, dh) = dense_gradient_hessian(&rows, p, &d.positive, &d.total, &beta, lambda);
            prop_assert_eq!(e.gradient, dg);
            prop_assert_eq!(e.hessian, dh);
        }

        /// The byte tables of indicator rows give the sums of the same rows
        /// as sparse cells, to rounding, up to 64 columns.
        #[test]
        fn indicator_tables_equal_the_sparse_sums(
            rows in proptest::collection::vec((any::<u64>(), 0u8..4, 0u8..4), 1..300),
            k in 0usize..=64,
            seed in any::<u64>(),
            lambda in 0.0f64..3.0,
            derivatives in any::<bool>(),
        ) {
            let keep = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
            let mut state = seed | 1;
            let beta: Vec<f64> = (0..=k)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 4001) as f64 / 1000.0 - 2.0
                })
                .collect();
            let mut sparse = Design::new(k + 1);
            let mut ind = Indicators { masks: Vec::new(), positive: Vec::new(), total: Vec::new(), k };
            for (m, s, f) in &rows {
                let m = m & keep;
                let (s, f) = (f64::from(*s), f64::from(*f));
                let cells = (0..k).filter(|&j| (m >> j) & 1 == 1).map(|j| (j as u32 + 1, 1.0));
                sparse.push_row(cells, s, s + f);
                ind.masks.push(m);
                ind.positive.push(s);
                ind.total.push(s + f);
            }
            let a = Model::evaluate(&sparse, &beta, lambda, derivatives);
            let b = Model::evaluate(&ind, &beta, lambda, derivatives);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
            prop_assert!(close(a.objective, b.objective), "{} vs {}", a.objective, b.objective);
            prop_assert!(close(a.log_likelihood, b.log_likelihood));
            prop_assert_eq!(a.gradient.len(), b.gradient.len());
            prop_assert_eq!(a.hessian.len(), b.hessian.len());
            for (x, y) in a.gradient.iter().zip(&b.gradient).chain(a.hessian.iter().zip(&b.hessian)) {
                prop_assert!(close(*x, *y), "{} vs {}", x, y);
            }
        }

        /// Grouped bitmask rows fit as the dense 0/1 matrix with a row per
        /// (mask, outcome) does, constant columns and all, to rounding.
        #[test]
        fn indicator_masks_fit_as_the_dense_matrix(
            data in proptest::collection::vec((0u16..64, any::<bool>(), 1u8..5), 2..150),
            columns in 1usize..12,
            stuck_on in any::<u16>(),
            lambda in 0.01f64..5.0,
        ) {
            // Some columns forced on in every row, to have constant ones.
            let masks: Vec<u64> = data.iter().map(|(m, _, _)| u64::from(m | (stuck_on & 0x0843))).collect();
            let y: Vec<bool> = data.iter().map(|(_, y, _)| *y).collect();
            let w: Vec<f64> = data.iter().map(|(_, _, w)| f64::from(*w)).collect();
            let x: Vec<Vec<f64>> = masks
                .iter()
                .map(|m| (0..columns).map(|j| ((m >> j) & 1) as f64).collect())
                .collect();
            let opts = LogisticOptions::default();
            let dense = fit_logistic_l2_weighted(&x, &y, &w, lambda, &opts);
            let mut groups: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
            for ((&m, &yi), &wi) in masks.iter().zip(&y).zip(&w) {
                let g = groups.entry(m).or_default();
                if yi { g.0 += wi } else { g.1 += wi }
            }
            let gm: Vec<u64> = groups.keys().copied().collect();
            let gs: Vec<f64> = groups.values().map(|g| g.0).collect();
            let gf: Vec<f64> = groups.values().map(|g| g.1).collect();
            let bits = fit_logistic_l2_indicators(&gm, columns, &gs, &gf, lambda, &opts);
            match (bits, dense) {
                (Ok(b), Ok(d)) => {
                    prop_assert_eq!(&b.constant_columns, &d.constant_columns);
                    prop_assert!(b.converged && d.converged);
                    for (u, v) in b.coefficients.iter().zip(&d.coefficients)
                        .chain(b.standard_errors.iter().zip(&d.standard_errors))
                        .chain([(&b.log_likelihood, &d.log_likelihood)])
                    {
                        prop_assert!(u == v || (u - v).abs() <= 1e-7 * v.abs().max(1.0), "{} vs {}", u, v);
                    }
                }
                (b, d) => prop_assert_eq!(b.err(), d.err()),
            }
        }
    }

    /// A deterministic non-separable data set with three binary predictors
    /// (correlated, like co-occurring events) and one continuous one.
    /// Mirrored in Python as:
    /// ```python
    /// import numpy as np
    /// rows, y = [], []
    /// for i in range(200):
    ///     a = float(i % 3 == 0); b = float(i % 5 < 2); c = float((i % 3 == 0) and (i % 7 < 4)); t = (i % 11) / 10.0
    ///     rows.append([a, b, c, t]); y.append((i * 37 % 101) / 101.0 < 0.2 + 0.3 * a + 0.2 * b - 0.1 * t)
    /// X = np.array(rows); y = np.array(y, dtype=float)
    /// ```
    fn dataset() -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..200u32 {
            let a = f64::from(u8::from(i % 3 == 0));
            let b = f64::from(u8::from(i % 5 < 2));
            let c = f64::from(u8::from(i % 3 == 0 && i % 7 < 4));
            let t = f64::from(i % 11) / 10.0;
            rows.push(vec![a, b, c, t]);
            y.push(f64::from(i * 37 % 101) / 101.0 < 0.2 + 0.3 * a + 0.2 * b - 0.1 * t);
        }
        (rows, y)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn unpenalised_matches_statsmodels_logit() {
        // import statsmodels.api as sm
        // res = sm.Logit(y, sm.add_constant(X)).fit(tol=1e-12, disp=0)
        // res.params, res.bse, res.llf
        let (x, y) = dataset();
        let fit = fit_logistic_l2(&x, &y, 0.0, &LogisticOptions::default()).unwrap();
        assert!(fit.converged);
        let params = [
            -0.996488414858823,
            1.4183700826070589,
            0.7764409548277181,
            -0.14245672031114734,
            -0.8721576394890966,
        ];
        let bse = [
            0.33653296544970973,
            0.4428027460459594,
            0.3207968305928943,
            0.5114575443384378,
            0.5023216030906225,
        ];
        assert_close(&fit.coefficients, &params, 1e-8);
        assert_close(&fit.standard_errors, &bse, 1e-8);
        assert!((fit.log_likelihood - -117.28182766658826).abs() < 1e-8);
    }

    #[test]
    fn penalised_matches_sklearn() {
        // from sklearn.linear_model import LogisticRegression
        // m = LogisticRegression(C=1/2.5, tol=1e-12, max_iter=10000).fit(X, y)
        // [m.intercept_[0], *m.coef_[0]]
        let (x, y) = dataset();
        let fit = fit_logistic_l2(&x, &y, 2.5, &LogisticOptions::default()).unwrap();
        assert!(fit.converged);
        let sklearn = [
            -0.9750854987325337,
            0.980219216545588,
            0.5935305699840147,
            0.13504772652858593,
            -0.5232128437235567,
        ];
        assert_close(&fit.coefficients, &sklearn, 1e-6);
        // Same optimum from statsmodels (its solver is looser, hence 1e-3):
        // sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial())
        //   .fit_regularized(alpha=np.array([0] + [2.5 / 200] * 4), L1_wt=0).params
        let glm = [
            -0.9751174761603107,
            0.9801759818729446,
            0.5935557275102424,
            0.13510144583574363,
            -0.5231687795270292,
        ];
        assert_close(&fit.coefficients, &glm, 1e-3);
        // Standard errors: sqrt(diag(inv(Z.T @ diag(w) @ Z + 2.5 * diag([0, 1, 1, 1, 1]))))
        // with Z = sm.add_constant(X), w = mu * (1 - mu), mu = m.predict_proba(X)[:, 1]
        let se = [
            0.2901632931271882,
            0.3324187940962883,
            0.27938847596239025,
            0.37431464424394717,
            0.3854132213451072,
        ];
        assert_close(&fit.standard_errors, &se, 1e-6);
    }

    #[test]
    fn separable_data_stays_finite_with_penalty() {
        // y = x exactly: separable.
        // X = np.array([[float(i % 2 == 0)] for i in range(20)]); y = X[:, 0]
        // m = LogisticRegression(C=1.0, tol=1e-12, max_iter=10000).fit(X, y); [m.intercept_[0], *m.coef_[0]]
        let x: Vec<[f64; 1]> = (0..20).map(|i| [f64::from(u8::from(i % 2 == 0))]).collect();
        let y: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        let fit = fit_logistic_l2(&x, &y, 1.0, &LogisticOptions::default()).unwrap();
        assert!(fit.converged);
        assert_close(
            &fit.coefficients,
            &[-1.1775052637358903, 2.3550105278876914],
            1e-6,
        );
        assert!(fit.standard_errors.iter().all(|s| s.is_finite()));
        // Without a penalty the estimate diverges: an error or a non-converged fit.
        match fit_logistic_l2(&x, &y, 0.0, &LogisticOptions::default()) {
            Err(StatsError::SingularMatrix) => {}
            Ok(f) => assert!(!f.converged),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn grouped_weights_equal_the_full_fit() {
        let (x, y) = dataset();
        let full = fit_logistic_l2(&x, &y, 1.5, &LogisticOptions::default()).unwrap();
        // Duplicate every row, then fit the originals with weight 2: same
        // estimate as fitting the duplicated data.
        let x2: Vec<Vec<f64>> = x.iter().chain(x.iter()).cloned().collect();
        let y2: Vec<bool> = y.iter().chain(y.iter()).copied().collect();
        let doubled = fit_logistic_l2(&x2, &y2, 1.5, &LogisticOptions::default()).unwrap();
        let weighted = fit_logistic_l2_weighted(
            &x,
            &y,
            &vec![2.0; x.len()],
            1.5,
            &LogisticOptions::default(),
        )
        .unwrap();
        assert_close(&weighted.coefficients, &doubled.coefficients, 1e-9);
        assert_close(&weighted.standard_errors, &doubled.standard_errors, 1e-9);
        assert!(full.coefficients != weighted.coefficients);
    }

    #[test]
    fn constant_columns_are_dropped() {
        let (x, y) = dataset();
        let padded: Vec<Vec<f64>> = x
            .iter()
            .map(|r| vec![r[0], 1.0, r[1], r[2], 0.0, r[3]])
            .collect();
        for lambda in [0.0, 2.5] {
            let base = fit_logistic_l2(&x, &y, lambda, &LogisticOptions::default()).unwrap();
            let fit = fit_logistic_l2(&padded, &y, lambda, &LogisticOptions::default()).unwrap();
            assert_eq!(fit.constant_columns, vec![1, 4]);
            assert_eq!(fit.coefficients[2], 0.0);
            assert_eq!(fit.standard_errors[5], f64::INFINITY);
            let keep = [0, 1, 3, 4, 6];
            let got: Vec<f64> = keep.iter().map(|&i| fit.coefficients[i]).collect();
            assert_close(&got, &base.coefficients, 1e-12);
            assert_eq!(
                fit.odds_ratio_interval(1, 0.95).unwrap(),
                Some((0.0, f64::INFINITY))
            );
            assert_eq!(fit.odds_ratio_interval(usize::MAX, 0.95).unwrap(), None);
            assert_eq!(fit.odds_ratio_interval(6, 0.95).unwrap(), None);
        }
    }

    #[test]
    fn invalid_inputs() {
        let o = LogisticOptions::default();
        let empty: &[Vec<f64>] = &[];
        assert!(fit_logistic_l2(empty, &[], 1.0, &o).is_err());
        assert!(fit_logistic_l2(&[vec![1.0], vec![0.0]], &[true], 1.0, &o).is_err());
        assert!(fit_logistic_l2(&[vec![1.0], vec![0.0, 1.0]], &[true, false], 1.0, &o).is_err());
        assert!(fit_logistic_l2(&[vec![f64::NAN], vec![0.0]], &[true, false], 1.0, &o).is_err());
        assert!(fit_logistic_l2(&[vec![1.0], vec![0.0]], &[true, false], -1.0, &o).is_err());
        assert_eq!(
            fit_logistic_l2(&[vec![1.0], vec![0.0]], &[true, true], 1.0, &o),
            Err(StatsError::DegenerateResponse)
        );
        // Duplicate (collinear) columns without penalty are singular; with one they are fine.
        let x: Vec<Vec<f64>> = (0..30)
            .map(|i| vec![f64::from(i % 4), f64::from(i % 4)])
            .collect();
        let y: Vec<bool> = (0..30).map(|i| i % 3 == 0).collect();
        assert_eq!(
            fit_logistic_l2(&x, &y, 0.0, &o),
            Err(StatsError::SingularMatrix)
        );
        let fit = fit_logistic_l2(&x, &y, 1.0, &o).unwrap();
        assert!((fit.coefficients[1] - fit.coefficients[2]).abs() < 1e-9);
        // Intercept-only model: β₀ = logit(mean y).
        let x: Vec<[f64; 0]> = vec![[]; 4];
        let fit = fit_logistic_l2(&x, &[true, false, false, false], 0.0, &o).unwrap();
        assert!((fit.coefficients[0] - (1.0f64 / 3.0).ln()).abs() < 1e-12);
        // Grouped indicators: lengths, counts, columns, degenerate response.
        let fit = |m: &[u64], k: usize, s: &[f64], f: &[f64]| {
            fit_logistic_l2_indicators(m, k, s, f, 1.0, &o)
        };
        assert!(fit(&[1, 0], 1, &[1.0], &[1.0, 2.0]).is_err());
        assert!(fit(&[1, 0], 1, &[1.0, -1.0], &[1.0, 2.0]).is_err());
        assert!(fit(&[1, 0], 65, &[1.0, 1.0], &[1.0, 2.0]).is_err());
        assert!(fit(&[], 1, &[], &[]).is_err());
        assert_eq!(
            fit(&[1, 0], 1, &[0.0, 0.0], &[1.0, 2.0]),
            Err(StatsError::DegenerateResponse)
        );
        assert!(fit(&[1, 0], 1, &[1.0, 1.0], &[1.0, 2.0]).is_ok());
    }
}
