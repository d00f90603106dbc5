"""Handing a trained model to the engines people run it in: GGUF for llama.cpp and Ollama.

- :mod:`lmtune.deploy.gguf`: a causal LM as one GGUF file (metadata, tensors, quantization).
- :mod:`lmtune.deploy.gguf_tokenizer`: its byte-level BPE tokenizer, special tokens and chat template.
- :mod:`lmtune.deploy.gguf_adapter`: a LoRA adapter in llama.cpp's adapter format.
- :mod:`lmtune.deploy.ollama`: the Ollama Modelfile beside the GGUF.

``lmtune export --format gguf|ollama`` (:mod:`lmtune.export`) loads the run and calls these.
"""
