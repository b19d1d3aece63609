"""Files and output: atomic writes, safetensors/JSON I/O, cache paths, console messages and figures."""
