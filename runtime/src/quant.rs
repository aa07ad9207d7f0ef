//! Int8 quantization and integer products, shared by the blob writer, the encoder and the index.
//!
//! Every row (a weight matrix's output unit, an activation row, a document) is quantized
//! symmetrically with one scale: `value ≈ q · scale`, `q = round(value / scale)` in `-127..=127`,
//! `scale = max |value| / 127` (stored as f16 in the blob, kept as f32 for activations). Products
//! are `i8 x i8 -> i32` and are turned back into floats once per output, so the only float
//! arithmetic is IEEE `+ - * /` and the `libm` functions: host and device agree bit for bit.

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

fn max_abs(row: &[f32]) -> f32 {
    row.iter().fold(0.0, |m, &v| libm::fmaxf(m, libm::fabsf(v)))
}

fn quantize_with(row: &[f32], scale: f32, out: &mut [i8]) {
    let usable = scale > 0.0 && scale.is_finite();
    for (q, &v) in out.iter_mut().zip(row) {
        // Clamped to ±127 first, and a NaN casts to 0: the cast never truncates.
        #[allow(clippy::cast_possible_truncation)]
        let rounded = libm::roundf(v / scale).clamp(-Q_MAX, Q_MAX) as i8;
        *q = if usable { rounded } else { 0 };
    }
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

fn dot_scalar<A: Int8, B: Int8>(a: &[A], b: &[B]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x.byte().cast_signed()) * i32::from(y.byte().cast_signed()))
        .sum()
}

/// Four products per two SMLAD instructions (ARMv7E-M's DSP extension: Cortex-M4, M7, M33 with
/// DSP), the packing CMSIS-NN uses for int8. On the emulated Cortex-M4F (`firmware-tests`, a
/// trained micro blob) a query's encode took 12.3 M instructions with the scalar loop (about 4
/// per product) and 6.8 M with this one (its inner loop: 18 instructions per 8 products).
#[cfg(all(feature = "dsp", target_arch = "arm"))]
mod dsp {
    use super::{Int8, dot_scalar};

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
        // instead of 8.15 M instructions (`firmware-tests`).
        let (a4, a_rest) = a_tail.as_chunks::<4>();
        let (b4, b_rest) = b_tail.as_chunks::<4>();
        for (x, y) in a4.iter().zip(b4) {
            total = smlad4(total, word(*x), word(*y));
        }
        total + dot_scalar(a_rest, b_rest)
    }

    /// Four int8 values as one little-endian word (one unaligned load on ARMv7-M).
    #[inline(always)]
    fn word<T: Int8>(x: [T; 4]) -> u32 {
        u32::from_le_bytes(x.map(Int8::byte))
    }

    /// `total + Σ` of the four byte-wise products of `a` and `b`: SXTB16 sign-extends bytes 0
    /// and 2 (and, rotated by 8, bytes 1 and 3) into two halfwords; SMLAD multiplies halfword
    /// pairs and adds both products. `|product| <= 2¹⁴`, so nothing saturates or wraps.
    #[inline(always)]
    fn smlad4(total: i32, a: u32, b: u32) -> i32 {
        let out: i32;
        // SAFETY: register-only instructions that every ARMv7E-M core has (the `dsp` feature is
        // the caller's promise of such a core); no memory or stack access. SMLAD may set the
        // sticky Q flag, which no Rust code reads.
        unsafe {
            core::arch::asm!(
                "sxtb16 {a_even}, {a}",
                "sxtb16 {b_even}, {b}",
                "sxtb16 {a_odd}, {a}, ror #8",
                "sxtb16 {b_odd}, {b}, ror #8",
                "smlad {total}, {a_even}, {b_even}, {total}",
                "smlad {total}, {a_odd}, {b_odd}, {total}",
                a = in(reg) a,
                b = in(reg) b,
                a_even = out(reg) _,
                b_even = out(reg) _,
                a_odd = out(reg) _,
                b_odd = out(reg) _,
                total = inout(reg) total => out,
                options(pure, nomem, nostack),
            );
        }
        out
    }
}

/// The f32 values of little-endian bytes (trailing bytes that make no whole value are ignored).
pub(crate) fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b))
}

/// The f16 values of little-endian bytes, widened to f32 (exact).
pub(crate) fn f16s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.as_chunks::<2>().0.iter().map(|b| f16::from_le_bytes(*b).to_f32())
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
}
