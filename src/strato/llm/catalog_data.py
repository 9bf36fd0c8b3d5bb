"""The catalog's entries, with the source of every number.

Sources, cited by key below:

* [splitwise] Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting",
  ISCA 2024, hardware table (DGX-A100 vs DGX-H100), as summarised in REFERENCE.md section 4.
* [splitwise-sim] the public Splitwise simulator (github Mutinifni/splitwise-sim, MIT): its hardware SKU
  files (machine TDP 6500 / 10200 / 7140 W) and notebook cost/power units (2.21 / 4.76, 24.8 / 44, and
  x0.7 power for a capped H100 machine); its profile ``perf_model.csv`` (capped-H100 rows are the H100
  rows with prompt time x1.30 and token time x1.00).
* [a100-ds] NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): FP16 tensor 312 TFLOPS dense (624 with
  sparsity), FP32 19.5 TFLOPS, HBM2e 2,039 GB/s, 400 W, NVLink 600 GB/s.
* [h100-ds] NVIDIA H100 Tensor Core GPU datasheet (SXM5 80GB): FP16 tensor 989.4 TFLOPS dense (1,979 with
  sparsity), FP32 66.9 TFLOPS, HBM3 3.35 TB/s, up to 700 W, NVLink 900 GB/s.
* [dgx-a100-ds] NVIDIA DGX A100 datasheet: 8 x A100 80GB, 6.5 kW max system power, 8 x 200 Gb/s HDR
  InfiniBand for the compute fabric.
* [dgx-h100-ds] NVIDIA DGX H100 datasheet: 8 x H100 80GB, ~10.2 kW max system power, 8 x 400 Gb/s NDR
  InfiniBand (ConnectX-7).
* Model architectures: each checkpoint's ``config.json`` on the Hugging Face hub (field names in the
  comments), parameter counts the sums of the checkpoints' tensor sizes (model cards round them: "70B").
"""

from __future__ import annotations

from strato.llm.catalog import Gpu, LlmModel, Machine

A100_80GB = Gpu(
    name="a100-80gb",
    part="A100-SXM4-80GB",
    tflops_fp16=312.0,  # [a100-ds] dense FP16 tensor-core peak
    paper_tflops=19.5,  # [splitwise] as printed; equals [a100-ds] FP32 non-tensor
    hbm_gb=80,  # [a100-ds], binary: 81920 MiB visible to CUDA
    hbm_bandwidth_gbps=2039.0,  # [splitwise], [a100-ds]
    tdp_w=400.0,  # [splitwise], [a100-ds]
    nvlink_gbps=4800.0,  # [a100-ds] 600 GB/s bidirectional per GPU (NVLink 3)
)

H100_80GB = Gpu(
    name="h100-80gb",
    part="H100-SXM5-80GB",
    tflops_fp16=989.4,  # [h100-ds] dense FP16 tensor-core peak
    paper_tflops=66.9,  # [splitwise] as printed; equals [h100-ds] FP32 non-tensor
    hbm_gb=80,  # [h100-ds]
    hbm_bandwidth_gbps=3352.0,  # [splitwise]; [h100-ds] rounds it to 3.35 TB/s
    tdp_w=700.0,  # [splitwise], [h100-ds]
    nvlink_gbps=7200.0,  # [h100-ds] 900 GB/s bidirectional per GPU (NVLink 4)
)

# Same silicon capped at 70 % of its power. Only the power-bound prompt phase slows down; the
# memory-bound token phase runs below the cap anyway. The x1.30 is what [splitwise-sim]'s profile encodes
# for this SKU (its capped rows are synthetic, derived from the H100 rows); [splitwise] reports the same
# trade: prompt phase slower, token phase unaffected at 70 % power.
H100_80GB_PCAP = Gpu(
    name="h100-80gb-pcap",
    part="H100-SXM5-80GB",
    tflops_fp16=989.4,
    paper_tflops=66.9,
    hbm_gb=80,
    hbm_bandwidth_gbps=3352.0,
    tdp_w=700.0,
    nvlink_gbps=7200.0,
    power_cap=0.7,  # [splitwise] H100cap
    capped_prompt_slowdown=1.30,  # [splitwise-sim] perf_model.csv, h100-80gb-pcap vs h100-80gb rows
)

GPUS: tuple[Gpu, ...] = (A100_80GB, H100_80GB, H100_80GB_PCAP)

MACHINES: tuple[Machine, ...] = (
    Machine(
        name="a100-80gb",
        label="DGX-A100",
        gpu=A100_80GB,
        gpus_per_machine=8,
        interconnect_gbps=200.0,  # [splitwise], [dgx-a100-ds] HDR per GPU
        cost_per_hour=17.6,  # [splitwise]
        power_kw=6.5,  # [dgx-a100-ds]; [splitwise-sim] SKU tdp 6500 W
        public_sim_cost=2.21,  # [splitwise-sim]
        public_sim_power=24.8,  # [splitwise-sim]
    ),
    Machine(
        name="h100-80gb",
        label="DGX-H100",
        gpu=H100_80GB,
        gpus_per_machine=8,
        interconnect_gbps=400.0,  # [splitwise], [dgx-h100-ds] NDR per GPU
        cost_per_hour=38.0,  # [splitwise]
        power_kw=10.2,  # [dgx-h100-ds]; [splitwise-sim] SKU tdp 10200 W
        public_sim_cost=4.76,  # [splitwise-sim]
        public_sim_power=44.0,  # [splitwise-sim]
    ),
    # A DGX-H100 whose GPUs are capped at 70 %. The rental price does not change. The machine's power
    # follows [splitwise-sim], which scales the whole machine by 0.7 (SKU tdp 7140 W = 0.7 x 10200 W, and
    # 0.7 x 44 power units in its notebooks); capping only the GPUs' 5.6 kW would give 8.5 kW instead.
    Machine(
        name="h100-80gb-pcap",
        label="DGX-H100 (GPUs power-capped to 70 %)",
        gpu=H100_80GB_PCAP,
        gpus_per_machine=8,
        interconnect_gbps=400.0,
        cost_per_hour=38.0,
        power_kw=7.14,
        public_sim_cost=4.76,
        public_sim_power=30.8,
    ),
)

MODELS: tuple[LlmModel, ...] = (
    # bigscience/bloom config.json: n_layer 70, hidden_size 14336, n_head 112 (multi-head attention),
    # vocab_size 250880, 4h GELU MLP, tied embeddings; 176,247,271,424 parameters. ALiBi positions set
    # no hard context limit (trained at 2048; the Splitwise profile runs it at 8192).
    LlmModel(
        name="bloom-176b",
        layers=70,
        hidden_size=14336,
        heads=112,
        kv_heads=112,
        intermediate_size=57344,
        vocab_size=250880,
        params_billion=176.247271424,
        mlp_matrices=2,
        tied_embeddings=True,
    ),
    # meta-llama/Llama-2-70b-hf config.json: num_hidden_layers 80, hidden_size 8192,
    # num_attention_heads 64, num_key_value_heads 8 (GQA), intermediate_size 28672, vocab_size 32000,
    # max_position_embeddings 4096; 68,976,648,192 parameters.
    LlmModel(
        name="llama2-70b",
        layers=80,
        hidden_size=8192,
        heads=64,
        kv_heads=8,
        intermediate_size=28672,
        vocab_size=32000,
        params_billion=68.976648192,
        max_context=4096,
    ),
    # meta-llama/Llama-2-13b-hf config.json: 40 layers, hidden 5120, 40 heads (MHA), intermediate 13824,
    # vocab 32000, context 4096; 13,015,864,320 parameters.
    LlmModel(
        name="llama2-13b",
        layers=40,
        hidden_size=5120,
        heads=40,
        kv_heads=40,
        intermediate_size=13824,
        vocab_size=32000,
        params_billion=13.01586432,
        max_context=4096,
    ),
    # meta-llama/Llama-2-7b-hf config.json: 32 layers, hidden 4096, 32 heads (MHA), intermediate 11008,
    # vocab 32000, context 4096; 6,738,415,616 parameters.
    LlmModel(
        name="llama2-7b",
        layers=32,
        hidden_size=4096,
        heads=32,
        kv_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
        params_billion=6.738415616,
        max_context=4096,
    ),
    # meta-llama/Meta-Llama-3-70B config.json: 80 layers, hidden 8192, 64 heads, 8 KV heads (GQA),
    # intermediate 28672, vocab 128256, max_position_embeddings 8192; 70,553,706,496 parameters.
    LlmModel(
        name="llama3-70b",
        layers=80,
        hidden_size=8192,
        heads=64,
        kv_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
        params_billion=70.553706496,
        max_context=8192,
    ),
    # meta-llama/Meta-Llama-3-8B config.json: 32 layers, hidden 4096, 32 heads, 8 KV heads (GQA),
    # intermediate 14336, vocab 128256, context 8192; 8,030,261,248 parameters.
    LlmModel(
        name="llama3-8b",
        layers=32,
        hidden_size=4096,
        heads=32,
        kv_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        params_billion=8.030261248,
        max_context=8192,
    ),
)

ALIASES: dict[str, tuple[str, ...]] = {
    "a100-80gb": ("a100", "dgx-a100", "a100-sxm4-80gb"),
    "h100-80gb": ("h100", "dgx-h100", "h100-sxm5-80gb"),
    "h100-80gb-pcap": ("h100cap", "h100-cap", "h100-pcap", "dgx-h100-pcap", "dgx-h100cap"),
    "bloom-176b": ("bloom", "bigscience/bloom"),
    "llama2-70b": ("llama-2-70b", "llama-2-70b-hf", "meta-llama/llama-2-70b-hf"),
    "llama2-13b": ("llama-2-13b", "llama-2-13b-hf", "meta-llama/llama-2-13b-hf"),
    "llama2-7b": ("llama-2-7b", "llama-2-7b-hf", "meta-llama/llama-2-7b-hf"),
    "llama3-70b": ("llama-3-70b", "meta-llama-3-70b", "meta-llama/meta-llama-3-70b"),
    "llama3-8b": ("llama-3-8b", "meta-llama-3-8b", "meta-llama/meta-llama-3-8b"),
}
