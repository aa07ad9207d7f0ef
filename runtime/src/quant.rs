//! Int8 quantization and integer products, shared by the blob writer, the encoder and the index.
//!
//! Every row (a weight matrix's output unit, an activation row, a document) is quantized
//! symmetrically with one scale: `value ≈ q · scale`, `q = value / scale` rounded to the nearest
//! integer (ties to even) in `-127..=127`,
//! `scale = max |value| / 127` (stored as f16 in the blob, kept as f32 for activations). Products
//! are `i8 x i8 -> i32` and are turned back into floats once per output, so the only float
//! arithmetic is IEEE `+ - * /` and the `libm` functions: host and device agree bit for bit.

use core::mem::MaybeUninit;

use half::f16;

/// The largest quantized magnitude: symmetric, so -128 is never produced.
const Q_MAX: f32 = 127.0;

/// Quantizes `row` into `out` with one f16 scale, the form of every weight row and document in
/// a blob: `row[i] ≈ out[i] as f32 * scale.to_f32()`.
///
/// The values are rounded against the f16-rounded scale, so the stored pair is as close to `row`
/// as the scale allows. Only the first `min(row.len(), out.len())` values are written. An
/// all-zero row gets scale 0; a row whose scale overflows f16 gets an infinite scale and zeros
/// (the blob writer refuses it).
///
/// ```
/// use otkd_runtime::quantize_row;
///
/// let mut q = [0i8; 3];
/// let scale = quantize_row(&[0.5, -1.27, 0.0], &mut q);
/// assert_eq!(q, [50, -127, 0]);
/// assert!((scale.to_f32() - 0.01).abs() < 1e-5);
/// ```
pub fn quantize_row(row: &[f32], out: &mut [i8]) -> f16 {
    let scale = f16::from_f32(max_abs(row) / Q_MAX);
    quantize_with(row, scale.to_f32(), out);
    scale
}

/// Quantizes an activation row with an f32 scale (nothing is stored, so no f16 rounding).
pub(crate) fn quantize_activations(row: &[f32], out: &mut [i8]) -> f32 {
    let scale = max_abs(row) / Q_MAX;
    quantize_with(row, scale, out);
    scale
}

/// `max |v|` over the row, NaNs ignored, from +0: what folding `libm::fmaxf(m, fabsf(v))` gives,
/// compared as bits (non-negative floats order as their bits do), which takes a third of
/// `fmaxf`'s instructions on the Cortex-M4. A NaN's magnitude bits are above infinity's: a row
/// with one is folded again, skipping them.
fn max_abs(row: &[f32]) -> f32 {
    const INFINITY_BITS: u32 = 0x7f80_0000;
    let magnitude = |v: f32| v.to_bits() & 0x7fff_ffff;
    let mut max = row.iter().fold(0u32, |m, &v| m.max(magnitude(v)));
    if max > INFINITY_BITS {
        max = row.iter().map(|&v| magnitude(v)).filter(|&m| m <= INFINITY_BITS).fold(0, u32::max);
    }
    f32::from_bits(max)
}

fn quantize_with(row: &[f32], scale: f32, out: &mut [i8]) {
    if !(scale > 0.0 && scale.is_finite()) {
        out.iter_mut().zip(row).for_each(|(q, _)| *q = 0);
        return;
    }
    for (q, &v) in out.iter_mut().zip(row) {
        // The same value as clamping the float to ±127 and casting to i8 (a NaN gives 0 either
        // way, an infinity the bound), in integers: the float compares took 20 instructions per
        // value on the Cortex-M4. Clamped to the i8 range first (one SSAT there), then -128 to
        // -127.
        #[allow(clippy::cast_possible_truncation)]
        let rounded = (round_ties_even(v / scale) as i32).clamp(-128, 127).max(-127) as i8;
        *q = rounded;
    }
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2²²` (a quantized value is at
/// most about 127 in magnitude; a NaN stays NaN): adding 1.5 · 2²³ leaves no fraction bits, so
/// the sum is rounded by the addition itself and the subtraction is exact. Two instructions where
/// `libm::rintf` is a call with branches (about 15 per value on the Cortex-M4, 5% of a micro
/// query).
fn round_ties_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// An int8 value as it is held: `i8` in activations, a raw byte in a borrowed blob (serde
/// borrows only `&[u8]`).
pub(crate) trait Int8: Copy {
    /// The value's two's-complement byte.
    fn byte(self) -> u8;
}

impl Int8 for i8 {
    fn byte(self) -> u8 {
        self.cast_unsigned()
    }
}

impl Int8 for u8 {
    fn byte(self) -> u8 {
        self
    }
}

/// `Σ a[i] · b[i]` over the common length of two int8 rows. Cannot overflow: the blob's widths
/// are at most `u16::MAX`, and `65535 · 128 · 128 < 2³¹`. Integer sums are exact in any order, so
/// the DSP path of Cortex-M4 (feature `dsp`) and the scalar path give the same value.
pub(crate) fn dot<A: Int8, B: Int8>(a: &[A], b: &[B]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or_default(), b.get(..n).unwrap_or_default());
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    {
        dsp::dot(a, b)
    }
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    {
        dot_scalar(a, b)
    }
}

/// Rows of a matrix that [`for_each_row_dot`] multiplies together.
const BLOCK: usize = 4;

/// Memory for the inputs the DSP path widens once per matrix ([`for_each_row_dot`],
/// [`for_each_row_dots`]): two words per four int8 values of each input, 2 bytes per value. Its
/// contents do not matter (it is written before it is read). Where it is too small for a
/// matrix's inputs, their products are computed without widening: the same values, more
/// instructions. Elsewhere (the host) it is not used.
pub(crate) type Wide = [MaybeUninit<u32>];

/// Words of [`Wide`] memory that widening `values` int8 values takes.
pub(crate) const fn wide_len(values: usize) -> usize {
    values / 2
}

/// Calls `f` with `input · row` for every row of the row-major matrix `values` (`input.len()`
/// columns; a trailing partial row is ignored), in row order. Each value is [`dot`]'s.
///
/// Why blocks: on the DSP path `input` is widened to halfwords once per matrix (into `wide`,
/// which needs [`wide_len`]`(input.len())` words) and each pass reads it once for [`BLOCK`] rows.
/// Why a callback: an iterator over the blocks' products cost 40 instructions per row on the
/// Cortex-M4, about a tenth of a micro query.
#[inline(always)]
pub(crate) fn for_each_row_dot<A: Int8, B: Int8>(
    input: &[A],
    values: &[B],
    wide: &mut Wide,
    mut f: impl FnMut(i32),
) {
    let cols = input.len().max(1);
    let (blocks, rest) = values.split_at(values.len() - values.len() % (BLOCK * cols));
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    let widened = dsp::Widened::new(input, wide);
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    let _ = wide;
    for block in blocks.chunks_exact(BLOCK * cols) {
        #[cfg(all(feature = "dsp", target_arch = "arm"))]
        let dots = widened.dot4(block);
        #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
        let dots: [i32; BLOCK] =
            core::array::from_fn(|r| dot_scalar(input, block.get(r * cols..).unwrap_or_default()));
        dots.into_iter().for_each(&mut f);
    }
    for row in rest.chunks_exact(cols) {
        f(dot(input, row));
    }
}

/// Words of a text that [`for_each_row_dots`] multiplies with each weight row per pass: the most
/// whose accumulators, with the pointers, the weight word's two registers and r0-r3 for LDM, fit
/// the twelve registers an `asm!` block gets on the Cortex-M4.
pub(crate) const WORDS_PER_PASS: usize = 4;

/// Calls `f` with `[input_t · row]` for the `W` inputs in `inputs` (row-major, `inputs.len() / W`
/// columns each; `1 <= W <= WORDS_PER_PASS`) and every row of the row-major matrix `values` (a
/// trailing partial row is ignored), in row order. Each value is [`dot`]'s.
///
/// Why several words: each weight row is read once per pass instead of once per word, and on the
/// DSP path a weight word's two SXTB16 serve every input (one weight row against four words:
/// 104 instructions per 128 products, against 168 per 128 for four rows against one word). `W`
/// is a constant so that the caller's per-output work unrolls over the words. The inputs are
/// widened into `wide` ([`wide_len`]`(inputs.len())` words).
#[inline(always)]
pub(crate) fn for_each_row_dots<const W: usize, B: Int8>(
    inputs: &[i8],
    values: &[B],
    wide: &mut Wide,
    mut f: impl FnMut([i32; W]),
) {
    if W <= 1 {
        for_each_row_dot(inputs, values, wide, |dot| f([dot; W]));
        return;
    }
    let cols = (inputs.len() / W).max(1);
    #[cfg(all(feature = "dsp", target_arch = "arm"))]
    let interleaved = dsp::Interleaved::<W>::new(inputs, cols, wide);
    #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
    let _ = wide;
    for row in values.chunks_exact(cols) {
        #[cfg(all(feature = "dsp", target_arch = "arm"))]
        f(interleaved.dots(row));
        #[cfg(not(all(feature = "dsp", target_arch = "arm")))]
        f(dots_scalar(inputs, cols, row));
    }
}

/// `[input_t · row]` for the `W` `cols`-wide inputs in `inputs` (zeros for missing ones).
fn dots_scalar<const W: usize, B: Int8>(inputs: &[i8], cols: usize, row: &[B]) -> [i32; W] {
    let mut dots = [0; W];
    for (d, input) in dots.iter_mut().zip(inputs.chunks_exact(cols.max(1))) {
        *d = dot_scalar(input, row);
    }
    dots
}

fn dot_scalar<A: Int8, B: Int8>(a: &[A], b: &[B]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x.byte().cast_signed()) * i32::from(y.byte().cast_signed()))
        .sum()
}

/// The first `(words, columns, rows)` for which [`for_each_row_dots`] (or, with one word,
/// [`for_each_row_dot`]) differs from the scalar reference, over 1 to [`WORDS_PER_PASS`] words,
/// 0 to 9 rows and widths around every block and chunk size (up to 400, past the widest
/// input its [`Wide`] memory holds, 384 columns of four words), with the extreme values -128 and
/// 127 among the weights. `None` when every product matches. No allocation: the on-device tests
/// run it, since the host only has the scalar path.
pub(crate) fn kernel_mismatch() -> Option<(usize, usize, usize)> {
    const WIDEST: usize = 400;
    const ROWS: usize = 9;
    let mut wide = [MaybeUninit::uninit(); wide_len(WORDS_PER_PASS * 384)];
    let value = |i: usize| -> i8 {
        match i % 23 {
            0 => -128,
            1 => 127,
            _ => u8::try_from((i * 37 + 11) % 251).unwrap_or(0).cast_signed(),
        }
    };
    let mut values = [0u8; ROWS * WIDEST];
    values.iter_mut().enumerate().for_each(|(i, v)| *v = value(i).cast_unsigned());
    let mut inputs = [0i8; WORDS_PER_PASS * WIDEST];
    // -128 is never an activation (quantization is symmetric).
    inputs.iter_mut().enumerate().for_each(|(i, v)| *v = value(i * 7 + 3).max(-127));
    for cols in [1, 3, 4, 8, 13, 16, 31, 32, 33, 48, 63, 64, 100, 192, 200, 384, 385, WIDEST] {
        for rows in 0..=ROWS {
            let values = values.get(..rows * cols).unwrap_or_default();
            let inputs = |words: usize| inputs.get(..words * cols).unwrap_or_default();
            let mismatch = |words| Some((words, cols, rows));
            if !words_match::<1>(inputs(1), cols, values, &mut wide) {
                return mismatch(1);
            }
            let mut row = 0;
            let mut same = true;
            for_each_row_dot(inputs(1), values, &mut wide, |dot| {
                let want = values.chunks_exact(cols).nth(row).map(|r| dot_scalar(inputs(1), r));
                same &= want == Some(dot);
                row += 1;
            });
            if !same || row != rows {
                return mismatch(1);
            }
            if !words_match::<2>(inputs(2), cols, values, &mut wide) {
                return mismatch(2);
            }
            if !words_match::<3>(inputs(3), cols, values, &mut wide) {
                return mismatch(3);
            }
            if !words_match::<WORDS_PER_PASS>(inputs(WORDS_PER_PASS), cols, values, &mut wide) {
                return mismatch(WORDS_PER_PASS);
            }
        }
    }
    None
}

/// Whether [`for_each_row_dots`] gives the scalar products of every row with each of the `W`
/// inputs, and a call per row.
fn words_match<const W: usize>(inputs: &[i8], cols: usize, values: &[u8], wide: &mut Wide) -> bool {
    let mut rows = values.chunks_exact(cols.max(1));
    let mut same = true;
    let mut calls = 0;
    for_each_row_dots::<W, _>(inputs, values, wide, |dots| {
        let want = rows.next().map(|row| dots_scalar::<W, _>(inputs, cols, row));
        same &= want == Some(dots);
        calls += 1;
    });
    same && calls == values.len() / cols.max(1)
}

/// Two products per SMLAD instruction (ARMv7E-M's DSP extension: Cortex-M4, M7, M33 with DSP),
/// the packing CMSIS-NN uses for int8. On the emulated Cortex-M4F (`firmware-tests`, a trained
/// micro blob with 1000 documents) a query's encode and search took 13.7 M instructions with the
/// scalar loop (about 4 per product), 8.1 M with [`dsp::dot`] on one row at a time (18 per 8
/// products), 6.3 M with three rows at a time and 5.3 M with the input widened once per matrix
/// ([`dsp::Widened`]; and the other changes of that commit: see the README's firmware table).
#[cfg(all(feature = "dsp", target_arch = "arm"))]
mod dsp {
    use core::mem::MaybeUninit;

    use super::{Int8, WORDS_PER_PASS, Wide, dot_scalar, dots_scalar, wide_len};

    /// Both slices have the same length (the caller cut them). Eight values per iteration:
    /// the loop's own instructions (pointer updates, compare, branch) are paid once per two
    /// words; every width a blob has (192, 384, 48-wide heads) is a multiple of 8.
    pub(super) fn dot<A: Int8, B: Int8>(a: &[A], b: &[B]) -> i32 {
        let (a8, a_tail) = a.as_chunks::<8>();
        let (b8, b_tail) = b.as_chunks::<8>();
        let mut total = 0;
        for (x, y) in a8.iter().zip(b8) {
            // Always two words each (8 / 4): the pattern compiles to two word loads per side.
            if let ([x0, x1], [y0, y1]) = (x.as_chunks::<4>().0, y.as_chunks::<4>().0) {
                total = smlad4(total, word(*x0), word(*y0));
                total = smlad4(total, word(*x1), word(*y1));
            }
        }
        // At most one word is left here for the widths blobs have; the loop stays because LLVM
        // then compiles the callers better: without it a trained micro query measured 9.27 M
        // instead of 8.15 M instructions (`firmware-tests`, when it did every row).
        let (a4, a_rest) = a_tail.as_chunks::<4>();
        let (b4, b_rest) = b_tail.as_chunks::<4>();
        for (x, y) in a4.iter().zip(b4) {
            total = smlad4(total, word(*x), word(*y));
        }
        total + dot_scalar(a_rest, b_rest)
    }

    /// One word (four values) of the input against four consecutive rows, for
    /// [`Widened::dot4`]: the input's two halfword pairs (one LDRD), then per row a load, two
    /// SXTB16 and two SMLAD. Rows 1 and 3 are read at `stride` past rows 0 and 2 (register-offset
    /// loads, before the post-incremented loads of rows 0 and 2 move their pointers): three
    /// registers address four rows.
    macro_rules! four_values_of_four_rows {
        () => {
            concat!(
                "ldrd {xe}, {xo}, [{px}], #8\n",
                "ldr {w}, [{p0}, {stride}]\n",
                "sxtb16 {t}, {w}\n",
                "smlad {t1}, {t}, {xe}, {t1}\n",
                "sxtb16 {w}, {w}, ror #8\n",
                "smlad {t1}, {w}, {xo}, {t1}\n",
                "ldr {w}, [{p0}], #4\n",
                "sxtb16 {t}, {w}\n",
                "smlad {t0}, {t}, {xe}, {t0}\n",
                "sxtb16 {w}, {w}, ror #8\n",
                "smlad {t0}, {w}, {xo}, {t0}\n",
                "ldr {w}, [{p2}, {stride}]\n",
                "sxtb16 {t}, {w}\n",
                "smlad {t3}, {t}, {xe}, {t3}\n",
                "sxtb16 {w}, {w}, ror #8\n",
                "smlad {t3}, {w}, {xo}, {t3}\n",
                "ldr {w}, [{p2}], #4\n",
                "sxtb16 {t}, {w}\n",
                "smlad {t2}, {t}, {xe}, {t2}\n",
                "sxtb16 {w}, {w}, ror #8\n",
                "smlad {t2}, {w}, {xo}, {t2}\n",
            )
        };
    }

    /// An int8 input widened once for a whole matrix ([`Widened::new`]), into the caller's
    /// [`Wide`] memory: per word of four values, the SXTB16 of bytes 0 and 2, then of bytes 1
    /// and 3, the halfword pairs SMLAD takes (CMSIS-NN's `read_and_pad_reordered`).
    pub(super) struct Widened<'a, A> {
        input: &'a [A],
        halves: &'a Wide,
        /// Chunks of [`CHUNK`] values widened (0 when `wide` was too small for `input`).
        chunks: usize,
    }

    impl<'a, A: Int8> Widened<'a, A> {
        /// Widens `input` into `wide` (nothing when `wide` has fewer than
        /// [`wide_len`]`(input.len())` words: every row is then multiplied by [`dot`]).
        pub(super) fn new(input: &'a [A], wide: &'a mut Wide) -> Self {
            let mut chunks = 0;
            if wide_len(input.len()) <= wide.len() {
                chunks = input.len() / CHUNK;
                for (halves, &x) in wide.as_chunks_mut::<2>().0.iter_mut().zip(input.as_chunks::<4>().0) {
                    let x = word(x);
                    *halves = [MaybeUninit::new(sxtb16(x)), MaybeUninit::new(sxtb16_ror8(x))];
                }
            }
            Self { input, halves: wide, chunks }
        }

        /// `[input · row]` for the four consecutive rows of `block` (`4 · input.len()` values):
        /// per [`CHUNK`] values one assembly block of eight [`four_values_of_four_rows`], 168
        /// instructions per 128 products, without a loop counter (the loop is Rust's), so that
        /// four accumulators, three row registers, the input's pointer and halfwords and the
        /// row's two registers fit.
        pub(super) fn dot4<B: Int8>(&self, block: &[B]) -> [i32; 4] {
            let (input, cols, chunks) = (self.input, self.input.len(), self.chunks);
            let row = |r: usize| block.get(r * cols..(r + 1) * cols).unwrap_or_default();
            if chunks == 0 || block.len() < 4 * cols {
                return core::array::from_fn(|r| dot(input, row(r)));
            }
            let (mut px, mut p0, mut p2) =
                (self.halves.as_ptr().cast::<u32>(), block.as_ptr(), row(2).as_ptr());
            let (mut t0, mut t1, mut t2, mut t3) = (0i32, 0i32, 0i32, 0i32);
            for _ in 0..chunks {
                // SAFETY: each block reads sixteen words of `halves` (`new` wrote two per four
                // input values into the `Wide` memory this borrows, so `chunks` blocks' worth)
                // and eight words of every row from
                // `p0`, `p0 + cols`, `p2 = p0 + 2 · cols` and `p2 + cols` (`CHUNK · chunks <= cols`
                // bytes of each of the four rows, which `block` holds: checked above), advancing
                // `px`, `p0` and `p2` past them. `B` is a one-byte type, ARMv7-M loads words at any
                // alignment, and `halves` is u32-aligned as LDRD needs. Registers only otherwise,
                // flags untouched.
                unsafe {
                    core::arch::asm!(
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        four_values_of_four_rows!(),
                        px = inout(reg) px,
                        p0 = inout(reg) p0,
                        p2 = inout(reg) p2,
                        stride = in(reg) cols,
                        xe = out(reg) _,
                        xo = out(reg) _,
                        w = out(reg) _,
                        t = out(reg) _,
                        t0 = inout(reg) t0,
                        t1 = inout(reg) t1,
                        t2 = inout(reg) t2,
                        t3 = inout(reg) t3,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
            let tail = chunks * CHUNK;
            let rest = input.get(tail..).unwrap_or_default();
            let mut dots = [t0, t1, t2, t3];
            if !rest.is_empty() {
                for (r, d) in dots.iter_mut().enumerate() {
                    *d += dot_scalar(rest, row(r).get(tail..).unwrap_or_default());
                }
            }
            dots
        }
    }

    /// `total + Σ` of the four byte-wise products of `a` and `b`.
    #[inline(always)]
    fn smlad4(total: i32, a: u32, b: u32) -> i32 {
        let total = smlad(total, sxtb16(a), sxtb16(b));
        smlad(total, sxtb16_ror8(a), sxtb16_ror8(b))
    }

    /// Four int8 values as one little-endian word (one unaligned load on ARMv7-M).
    #[inline(always)]
    fn word<T: Int8>(x: [T; 4]) -> u32 {
        u32::from_le_bytes(x.map(Int8::byte))
    }

    /// Bytes 0 and 2, sign-extended into two halfwords (SMLAD then multiplies halfword pairs
    /// and adds both products; `|product| <= 2¹⁴`, so nothing saturates or wraps).
    #[inline(always)]
    fn sxtb16(x: u32) -> u32 {
        let out: u32;
        // SAFETY: a register-only instruction every ARMv7E-M core has (the `dsp` feature is the
        // caller's promise of such a core).
        unsafe {
            core::arch::asm!("sxtb16 {out}, {x}", x = in(reg) x, out = lateout(reg) out, options(pure, nomem, nostack))
        };
        out
    }

    /// Bytes 1 and 3, sign-extended into two halfwords.
    #[inline(always)]
    fn sxtb16_ror8(x: u32) -> u32 {
        let out: u32;
        // SAFETY: as in `sxtb16`.
        unsafe {
            core::arch::asm!("sxtb16 {out}, {x}, ror #8", x = in(reg) x, out = lateout(reg) out, options(pure, nomem, nostack))
        };
        out
    }

    /// Columns [`Interleaved::dots`] and [`Widened::dot4`] multiply per assembly block (eight words
    /// of a row).
    const CHUNK: usize = 32;

    /// One word (four values) of a weight row against two, three or four inputs of
    /// [`Interleaved`] (the accumulators' names are the arguments): a load and two SXTB16 for the
    /// row, then the inputs' halfword pairs, two inputs per LDM (into r0-r3, which must be listed
    /// in order, hence named) or one per LDRD, and two SMLAD per input.
    macro_rules! four_values_of_one_row {
        (@row) => {
            concat!("ldr {w}, [{pw}], #4\n", "sxtb16 {t}, {w}\n", "sxtb16 {w}, {w}, ror #8\n")
        };
        (@smlad2 $a:literal, $b:literal) => {
            concat!(
                "smlad {", $a, "}, {t}, r0, {", $a, "}\n",
                "smlad {", $a, "}, {w}, r1, {", $a, "}\n",
                "smlad {", $b, "}, {t}, r2, {", $b, "}\n",
                "smlad {", $b, "}, {w}, r3, {", $b, "}\n",
            )
        };
        ($a:literal, $b:literal) => {
            concat!(
                four_values_of_one_row!(@row),
                "ldm {px}!, {{r0, r1, r2, r3}}\n",
                four_values_of_one_row!(@smlad2 $a, $b),
            )
        };
        ($a:literal, $b:literal, $c:literal) => {
            concat!(
                four_values_of_one_row!($a, $b),
                "ldrd r0, r1, [{px}], #8\n",
                "smlad {", $c, "}, {t}, r0, {", $c, "}\n",
                "smlad {", $c, "}, {w}, r1, {", $c, "}\n",
            )
        };
        ($a:literal, $b:literal, $c:literal, $d:literal) => {
            concat!(
                four_values_of_one_row!($a, $b),
                "ldm {px}!, {{r0, r1, r2, r3}}\n",
                four_values_of_one_row!(@smlad2 $c, $d),
            )
        };
    }

    /// [`CHUNK`] values of a weight row against every input: one assembly block of
    /// [`Interleaved::dots`], without a loop counter (the loop is the caller's), so that four
    /// accumulators, the two pointers, the row's two registers and r0-r3 fit.
    macro_rules! chunk_of_one_row {
        ($($acc:literal),+) => {
            concat!(
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
                four_values_of_one_row!($($acc),+),
            )
        };
    }

    /// `W` int8 inputs (`2 <= W <= WORDS_PER_PASS`) widened and interleaved once for a whole
    /// matrix: per word (four values) of the columns, each input's two halfword pairs (as in
    /// [`Widened`]) in input order, so that one pointer walks them all in a row's pass.
    pub(super) struct Interleaved<'a, const W: usize> {
        inputs: &'a [i8],
        cols: usize,
        halves: &'a Wide,
        /// Chunks of [`CHUNK`] columns widened (0: not widened, every row is multiplied by
        /// `dot`).
        chunks: usize,
    }

    impl<'a, const W: usize> Interleaved<'a, W> {
        /// Widens and interleaves the `W` inputs of `cols` values in `inputs` into `wide`
        /// (nothing for `W` outside `2..=WORDS_PER_PASS`, fewer values than `W` inputs need, or
        /// a `wide` with fewer than [`wide_len`]`(W · cols)` words).
        pub(super) fn new(inputs: &'a [i8], cols: usize, wide: &'a mut Wide) -> Self {
            if !(2..=WORDS_PER_PASS).contains(&W)
                || inputs.len() < W * cols
                || wide_len(W * cols) > wide.len()
            {
                return Self { inputs, cols, halves: wide, chunks: 0 };
            }
            let chunks = cols / CHUNK;
            let mut pairs = wide.as_chunks_mut::<2>().0.iter_mut();
            for column in (0..chunks * CHUNK).step_by(4) {
                for input in inputs.chunks_exact(cols).take(W) {
                    let x =
                        input.get(column..).and_then(|x| x.first_chunk::<4>()).copied().unwrap_or_default();
                    if let Some(pair) = pairs.next() {
                        let x = word(x);
                        *pair = [MaybeUninit::new(sxtb16(x)), MaybeUninit::new(sxtb16_ror8(x))];
                    }
                }
            }
            Self { inputs, cols, halves: wide, chunks }
        }

        /// `[input_t · row]` for every input, `row` at least `cols` long: per [`CHUNK`] values
        /// one assembly block of `8 · (3 + 2.5 · W)` instructions (see
        /// [`four_values_of_one_row`]; a half for an LDRD with three inputs), 104 per 128
        /// products for four inputs.
        pub(super) fn dots<B: Int8>(&self, row: &[B]) -> [i32; W] {
            let (chunks, cols) = (self.chunks, self.cols);
            let Some(row) = row.get(..cols).filter(|_| chunks > 0) else {
                return dots_scalar(self.inputs, cols, row);
            };
            let (mut px, mut pw) = (self.halves.as_ptr().cast::<u32>(), row.as_ptr());
            let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
            for _ in 0..chunks {
                // SAFETY (all three): each block reads eight words of the row (`CHUNK · chunks
                // <= cols` bytes in all, which `row` holds: cut above) and `16 · W` words of
                // `halves` (`new` wrote `2 · W` per four columns into the `Wide` memory this
                // borrows, so `chunks` blocks' worth: `16 · W · chunks <= wide_len(W · cols)`
                // words, checked there), advancing both pointers past them. `B` is a one-byte type, ARMv7-M loads words at any
                // alignment, and `halves` is u32-aligned as LDM and LDRD need. Registers only
                // otherwise, flags untouched.
                match W {
                    2 => unsafe {
                        core::arch::asm!(
                            chunk_of_one_row!("a0", "a1"),
                            px = inout(reg) px,
                            pw = inout(reg) pw,
                            w = out(reg) _,
                            t = out(reg) _,
                            a0 = inout(reg) a0,
                            a1 = inout(reg) a1,
                            out("r0") _,
                            out("r1") _,
                            out("r2") _,
                            out("r3") _,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    },
                    3 => unsafe {
                        core::arch::asm!(
                            chunk_of_one_row!("a0", "a1", "a2"),
                            px = inout(reg) px,
                            pw = inout(reg) pw,
                            w = out(reg) _,
                            t = out(reg) _,
                            a0 = inout(reg) a0,
                            a1 = inout(reg) a1,
                            a2 = inout(reg) a2,
                            out("r0") _,
                            out("r1") _,
                            out("r2") _,
                            out("r3") _,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    },
                    _ => unsafe {
                        core::arch::asm!(
                            chunk_of_one_row!("a0", "a1", "a2", "a3"),
                            px = inout(reg) px,
                            pw = inout(reg) pw,
                            w = out(reg) _,
                            t = out(reg) _,
                            a0 = inout(reg) a0,
                            a1 = inout(reg) a1,
                            a2 = inout(reg) a2,
                            a3 = inout(reg) a3,
                            out("r0") _,
                            out("r1") _,
                            out("r2") _,
                            out("r3") _,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    },
                }
            }
            let all = [a0, a1, a2, a3];
            let mut dots: [i32; W] = core::array::from_fn(|i| all.get(i).copied().unwrap_or_default());
            let tail = chunks * CHUNK;
            if tail < cols {
                let row = row.get(tail..).unwrap_or_default();
                for (d, input) in dots.iter_mut().zip(self.inputs.chunks_exact(cols)) {
                    *d += dot_scalar(input.get(tail..).unwrap_or_default(), row);
                }
            }
            dots
        }
    }

    /// `total +` both halfword products of `a` and `b`.
    #[inline(always)]
    fn smlad(total: i32, a: u32, b: u32) -> i32 {
        let out: i32;
        // SAFETY: as in `sxtb16`. SMLAD may set the sticky Q flag, which no Rust code reads.
        unsafe {
            core::arch::asm!(
                "smlad {out}, {a}, {b}, {total}",
                a = in(reg) a,
                b = in(reg) b,
                total = in(reg) total,
                out = lateout(reg) out,
                options(pure, nomem, nostack),
            )
        };
        out
    }
}

/// The f32 values of little-endian bytes (trailing bytes that make no whole value are ignored).
pub(crate) fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b))
}

/// The f16 values of little-endian bytes, widened to f32 (exact).
pub(crate) fn f16s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.as_chunks::<2>().0.iter().map(|b| f16_to_f32(u16::from_le_bytes(*b)))
}

/// The f32 of f16 bits, exactly `half::f16::to_f32`: `half` has no fast path for ARMv7-M, and
/// its portable one took 27 instructions per weight row's scale there (4% of a micro query).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exponent {
        // A normal number (every scale but zero, in practice) first: the exponent rebiased.
        1..=30 => (u32::from(bits & 0x7fff) << 13) + (112 << 23),
        // Subnormal: mantissa · 2⁻²⁴, exact in f32.
        0 => (mantissa as f32 * (1.0 / 16_777_216.0)).to_bits(),
        _ => 0x7f80_0000 | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_rows_are_within_half_a_step() {
        let row: [f32; 6] = [0.3, -0.7, 0.01, 0.0, 0.69999, -0.2];
        let mut q = [0i8; 6];
        let scale = quantize_row(&row, &mut q).to_f32();
        for (&v, &q) in row.iter().zip(&q) {
            assert!((v - f32::from(q) * scale).abs() <= scale * 0.5 + 1e-6, "{v} vs {q} * {scale}");
        }
        let mut a = [0i8; 6];
        let s = quantize_activations(&row, &mut a);
        assert_eq!(a.iter().map(|v| v.abs()).max(), Some(127));
        assert!((s - 0.7 / 127.0).abs() < 1e-9);
    }

    #[test]
    fn zero_and_non_finite_rows_quantize_to_zeros() {
        let mut q = [1i8; 2];
        assert_eq!(quantize_row(&[0.0, 0.0], &mut q).to_f32(), 0.0);
        assert_eq!(q, [0, 0]);
        let mut q = [1i8; 2];
        assert!(quantize_row(&[1e30, 1.0], &mut q).to_f32().is_infinite());
        assert_eq!(q, [0, 0]);
    }

    #[test]
    fn products_and_byte_views() {
        assert_eq!(dot(&[1i8, -2, 127], &[3i8, 4, -127]), 3 - 8 - 16129);
        assert_eq!(dot(&[-127i8, 2], &[0x80u8, 0xff]), 127 * 128 - 2);
        // The common length only.
        assert_eq!(dot(&[2i8, 3, 4], &[5i8]), 10);
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).chain([7]).collect();
        assert_eq!(f32s(&bytes).collect::<Vec<_>>(), [1.5, -2.0]);
        assert_eq!(f16s(&f16::from_f32(0.25).to_le_bytes()).collect::<Vec<_>>(), [0.25]);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        for (x, want) in
            [(0.5, 0.0), (1.5, 2.0), (2.5, 2.0), (-0.5, 0.0), (-2.5, -2.0), (126.7, 127.0), (-3.2, -3.0)]
        {
            assert_eq!(round_ties_even(x), want, "{x}");
        }
        assert!(round_ties_even(f32::NAN).is_nan());
    }

    #[test]
    fn f16_widening_matches_half_on_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let (got, want) = (f16_to_f32(bits), f16::from_bits(bits).to_f32());
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{bits:#06x}");
        }
    }

    #[test]
    fn kernels_match_the_scalar_reference_for_every_word_count_remainder_and_width() {
        assert_eq!(kernel_mismatch(), None);
    }

    #[test]
    fn several_words_per_pass_give_each_words_dots() {
        let value = |i: usize| u8::try_from((i * 37 + 11) % 251).unwrap_or(0).cast_signed();
        for cols in [1, 5, 32, 48] {
            let inputs: Vec<i8> = (0..WORDS_PER_PASS * cols).map(|i| value(i * 3 + 2)).collect();
            let values: Vec<u8> = (0..7 * cols + 3).map(|i| value(i).cast_unsigned()).collect();
            let mut got = Vec::new();
            let mut wide = [MaybeUninit::uninit(); wide_len(3 * 48)];
            for_each_row_dots::<3, _>(&inputs[..3 * cols], &values, &mut wide, |dots| got.push(dots));
            let want: Vec<[i32; 3]> = values
                .chunks_exact(cols)
                .map(|row| [0, 1, 2].map(|t| dot(&inputs[t * cols..(t + 1) * cols], row)))
                .collect();
            assert_eq!(got, want, "{cols} columns");
        }
    }

    #[test]
    fn row_dots_are_dots_for_every_block_remainder_and_width() {
        let value = |i: usize| u8::try_from((i * 37 + 11) % 251).unwrap_or(0).cast_signed();
        for cols in [1, 3, 4, 8, 13, 48] {
            for rows in 0..8 {
                let input: Vec<i8> = (0..cols).map(|i| value(i * 5 + 1)).collect();
                let values: Vec<u8> = (0..rows * cols + 2).map(|i| value(i).cast_unsigned()).collect();
                let mut got = Vec::new();
                for_each_row_dot(&input, &values, &mut [], |d| got.push(d));
                let want: Vec<i32> = values.chunks_exact(cols).map(|row| dot(&input, row)).collect();
                assert_eq!(got, want, "{rows} rows of {cols}");
            }
        }
    }
}
