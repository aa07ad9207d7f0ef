//! The firmware's semihosting exit codes: QEMU exits with them, so they are the verdict the host
//! reads. One definition for both sides: the firmware (`otkd_firmware::code`) and the host
//! harness, which includes this file by `#[path]` (`otkd_firmware_harness::code`).

/// Every query answered.
pub const OK: i32 = 0;
/// A panic or a failed assertion.
pub const PANIC: i32 = 1;
/// The blob was refused (`LoadError`, printed as `@load-error NAME`): an erased region
/// (`BadMagic`), a corrupt blob (`BadCrc`, ...).
pub const LOAD_ERROR: i32 = 2;
/// The blob loaded but does not fit this firmware (more scratch memory than it has, or no
/// document index).
pub const WRONG_BLOB: i32 = 3;
/// The HardFault handler ran.
pub const HARD_FAULT: i32 = 4;
