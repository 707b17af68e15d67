#!/usr/bin/env bash
# Start an SGLang server outside Docker Compose, configured by the same variables as the compose file's
# `sglang` service (see .env.example for each one and its default):
#
#   LLM_MODEL              model path or Hugging Face id     (Qwen/Qwen2.5-7B-Instruct)
#   LLM_SERVED_MODEL_NAME  name clients send as `model`      (LLM_MODEL); workers: ARK_LLM__MODEL_NAME
#   LLM_HOST, LLM_PORT     where to listen                   (0.0.0.0, 30000)
#   LLM_TP, LLM_DP         tensor / data parallel size       (1, 1): LLM_TP x LLM_DP GPUs in all
#   LLM_MEM_FRACTION       GPU memory for weights + KV cache (0.85)
#   LLM_CONTEXT_LENGTH     context length                    (empty: the model's own)
#   LLM_REASONING_PARSER   e.g. qwen3, deepseek-r1           (empty: off)
#   LLM_TOOL_CALL_PARSER   e.g. qwen25, llama3, mistral      (qwen25)
#   LLM_API_KEY            clients must send it              (empty: no key); workers: ARK_LLM__API_KEY
#   LLM_EXTRA_ARGS         more launch_server flags, split on spaces
#   PYTHON                 the interpreter that has sglang   (python3)
#
# Arguments given to this script are passed on to sglang.launch_server after the others, e.g.
#   LLM_MODEL=Qwen/Qwen2.5-14B-Instruct LLM_TP=2 sglang/launch.sh --max-running-requests 256
set -euo pipefail

model="${LLM_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
served_model_name="${LLM_SERVED_MODEL_NAME:-${model}}"

args=(
    --model-path "${model}"
    --served-model-name "${served_model_name}"
    --host "${LLM_HOST:-0.0.0.0}"
    --port "${LLM_PORT:-30000}"
    --tp-size "${LLM_TP:-1}"
    --dp-size "${LLM_DP:-1}"
    --mem-fraction-static "${LLM_MEM_FRACTION:-0.85}"
)
if [[ -n "${LLM_CONTEXT_LENGTH:-}" ]]; then
    args+=(--context-length "${LLM_CONTEXT_LENGTH}")
fi
if [[ -n "${LLM_REASONING_PARSER:-}" ]]; then
    args+=(--reasoning-parser "${LLM_REASONING_PARSER}")
fi
args+=(--tool-call-parser "${LLM_TOOL_CALL_PARSER:-qwen25}")
if [[ -n "${LLM_API_KEY:-}" ]]; then
    args+=(--api-key "${LLM_API_KEY}")
fi
args+=(--enable-metrics)
if [[ -n "${LLM_EXTRA_ARGS:-}" ]]; then
    read -r -a extra <<<"${LLM_EXTRA_ARGS}"
    args+=("${extra[@]}")
fi

exec "${PYTHON:-python3}" -m sglang.launch_server "${args[@]}" "$@"
