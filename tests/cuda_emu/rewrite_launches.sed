# Rewrite CUDA launches `kernel<<<grid, block, smem, stream>>>(args)` (and `kernel<T><<<...>>>`)
# into `emu_launch(kernel, emu::Cfg{grid, block, smem, stream}, args)` (shim/cuda_runtime.h), so
# that the host C++ compiler builds the real cuda/*.cu sources. A launch must sit on one line.
s/([A-Za-z_][A-Za-z0-9_:]*(<[^<>]*>)?)<<<(.*)>>>\(/emu_launch(\1, emu::Cfg{\3}, /
# Dynamic shared memory `extern __shared__ T name[];` becomes a pointer to the block's buffer.
s/extern __shared__ ([A-Za-z_][A-Za-z0-9_]*) ([A-Za-z_][A-Za-z0-9_]*)\[\];/\1* \2 = static_cast<\1*>(emu::dyn_smem());/
