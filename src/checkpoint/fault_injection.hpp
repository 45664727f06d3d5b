#pragma once
// TEST-ONLY fault injection for the checkpoint writer. Production code never calls this.
//
// set_checkpoint_write_fault_after(n): after n more bytes have been written by any
// CheckpointWriter (counted across all its files, meta.json included), the next write writes
// only up to that limit and then fails exactly like a full disk: Error("write failed for
// <file>: No space left on device"). The fault stays armed (the disk stays "full") until
// set_checkpoint_write_fault_after(-1) disarms it, which is the default state.
// This is the one piece of process-wide mutable state in the module; it exists because a
// real ENOSPC cannot be produced reliably in a unit test (tests may run as root).
namespace competelm {

void set_checkpoint_write_fault_after(long bytes);

}  // namespace competelm
