#!/usr/bin/env python3
"""Writes tests/export/chat_template_golden.json: LLaMA-Factory's own Jinja chat templates
(Template._get_jinja_template / Llama2Template._get_jinja_template after fix_special_tokens), for every
template zlora has, with two stand-in tokenizers. test_chat_template.cpp compares zlora's
jinja_chat_template with them character for character.

LLaMA-Factory's data/template.py is run as it is; only its imports that need torch, transformers or
datasets (extras.logging, data_utils, mm_plugin) are stubbed. Needs python3 and typing_extensions.

  usage: tools/golden/chat_template/make_golden.py LLAMA_FACTORY_SRC_DIR [COMMIT] > tests/export/chat_template_golden.json
  e.g.   mkdir /tmp/lf && git -C LLaMA-Factory archive HEAD src/llamafactory/data | tar -x -C /tmp/lf
         python3 tools/golden/chat_template/make_golden.py /tmp/lf/src $(git -C LLaMA-Factory rev-parse HEAD) \
           > tests/export/chat_template_golden.json
"""

import json
import os
import shutil
import sys
import tempfile

ZLORA_TEMPLATES = [
    "qwen", "chatml", "llama3", "default", "alpaca", "empty", "qwen3", "qwen3_nothink", "llama2", "llama2_zh",
    "llama4", "mistral", "ministral", "mistral_small", "gemma", "gemma2", "gemma3", "deepseek", "deepseek3",
    "deepseekr1", "deepseekcoder", "phi", "phi4", "phi4_mini", "glm4", "glm4_moe", "glm4_7", "glmz1", "yi",
    "vicuna", "zephyr", "chatml_de", "cohere", "ernie_nothink", "exaone", "falcon", "gpt_oss", "granite3",
    "granite4", "intern2", "lfm2", "mimo", "olmo", "openchat", "seed_coder", "smollm", "smollm2", "solar",
    "starchat",
]

STUBS = {
    "extras/__init__.py": "",
    "extras/logging.py": (
        "class _L:\n    def __getattr__(self, n):\n        return lambda *a, **k: None\n"
        "def get_logger(name):\n    return _L()\n"
    ),
    "data/__init__.py": "",
    "data/data_utils.py": (
        "from enum import Enum\nfrom typing import Union\n"
        "SLOTS = list[Union[str, set[str], dict[str, str]]]\n"
        "class Role(str, Enum):\n    USER = 'user'\n    ASSISTANT = 'assistant'\n    SYSTEM = 'system'\n"
        "    FUNCTION = 'function'\n    OBSERVATION = 'observation'\n"
    ),
    "data/mm_plugin.py": "def get_mm_plugin(name, **kwargs):\n    return None\n",
    "__init__.py": "",
}


class FakeTokenizer:
    """What fix_special_tokens and _get_jinja_template touch of a PreTrainedTokenizer."""

    def __init__(self, bos, eos):
        self.bos_token, self.bos_token_id = bos, (1 if bos is not None else None)
        self.eos_token, self.eos_token_id = eos, (2 if eos is not None else None)
        self.pad_token, self.pad_token_id = None, None
        self.chat_template = None

    def add_special_tokens(self, d, replace_additional_special_tokens=True):
        if "eos_token" in d:
            self.eos_token, self.eos_token_id = d["eos_token"], 2
        return 0


def main():
    src = sys.argv[1]
    work = tempfile.mkdtemp()
    pkg = os.path.join(work, "llamafactory")
    os.makedirs(os.path.join(pkg, "extras"))
    os.makedirs(os.path.join(pkg, "data"))
    for rel, text in STUBS.items():
        with open(os.path.join(pkg, rel), "w") as f:
            f.write(text)
    for rel in ("data/template.py", "data/formatter.py", "data/tool_utils.py"):
        shutil.copy(os.path.join(src, "llamafactory", rel), os.path.join(pkg, rel))
    sys.path.insert(0, work)
    from llamafactory.data.template import TEMPLATES  # noqa: E402

    commit = sys.argv[2] if len(sys.argv) > 2 else ""
    out = {"source": "LLaMA-Factory data/template.py" + (" @ " + commit if commit else ""), "tokenizers": {}, "templates": {}}
    tokenizers = {"bos_eos": ("<s>", "</s>"), "none": (None, None)}
    for tname, (bos, eos) in tokenizers.items():
        out["tokenizers"][tname] = {"bos_token": bos, "eos_token": eos}
    for name in ZLORA_TEMPLATES:
        t = TEMPLATES[name]
        entry = {"replace_jinja_template": t.replace_jinja_template, "class": type(t).__name__}
        for tname, (bos, eos) in tokenizers.items():
            tok = FakeTokenizer(bos, eos)
            t.fix_special_tokens(tok)
            entry[tname] = t._get_jinja_template(tok)
        out["templates"][name] = entry
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
