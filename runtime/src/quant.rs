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

/// `Σ a[i] · b[i]` of two int8 rows. Cannot overflow: the blob's widths are at most `u16::MAX`,
/// and `65535 · 128 · 128 < 2³¹`.
pub(crate) fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// [`dot`] against a stored row (int8 kept as bytes: serde borrows only `&[u8]`).
pub(crate) fn dot_stored(a: &[i8], stored: &[u8]) -> i32 {
    a.iter().zip(stored).map(|(&x, &y)| i32::from(x) * i32::from(y.cast_signed())).sum()
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
        assert_eq!(dot(&[1, -2, 127], &[3, 4, -127]), 3 - 8 - 16129);
        assert_eq!(dot_stored(&[-127, 2], &[0x80, 0xff]), 127 * 128 - 2);
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).chain([7]).collect();
        assert_eq!(f32s(&bytes).collect::<Vec<_>>(), [1.5, -2.0]);
        assert_eq!(f16s(&f16::from_f32(0.25).to_le_bytes()).collect::<Vec<_>>(), [0.25]);
    }
}
