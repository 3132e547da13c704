"""The model card of a converted weight: Hub metadata, source, license, accuracy, size and usage."""

from __future__ import annotations

import torch
from timm.models._hub import hf_split
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gmacs", "model_card"]


def count_gmacs(model: torch.nn.Module, input_size) -> float:
    """Multiply-accumulates (G) of one forward pass at ``input_size``: torch's FLOP counter / 2 (FFTs,
    which it does not count, are left out). A model on the meta device costs nothing to run."""
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops() / 2e9


def model_card(entry: dict, model: torch.nn.Module, repo_id: str) -> str:
    """The README of a converted weight: Hub metadata, source, license, accuracy, size and usage."""
    name = f"{entry['model']}.{entry['tag']}"
    input_size = tuple(model.pretrained_cfg["input_size"])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gmacs = count_gmacs(model, input_size)
    top1 = f"{entry['top1']}" if entry.get("top1") is not None else "n/a (no ImageNet-1k head)"
    details = [
        f"- **Architecture:** `{entry['model']}` (zoo, registered in timm)",
        f"- **Params (M):** {params:.1f}",
        f"- **GMACs:** {gmacs:.2f} at {input_size[1]}x{input_size[2]} (FFTs not counted)",
        f"- **Image size:** {input_size[1]}x{input_size[2]}, crop_pct {entry.get('crop_pct')}, "
        f"{entry.get('interpolation', 'bicubic')} interpolation",
        f"- **Classes:** {entry['num_classes']}",
        f"- **ImageNet-1k top-1 (reported):** {top1}",
        f"- **Source:** {entry['source_url']} ({entry.get('source_format', 'official')} layout"
        + (f", sha256 `{entry['sha256']}`)" if entry.get("sha256") else ")"),
    ]
    if entry.get("hf_hub_id"):
        details.append(f"- **Hub copy of the source:** https://huggingface.co/{hf_split(entry['hf_hub_id'])[0]}")
    paper = ", ".join(str(entry[k]) for k in ("paper_name", "paper_ids") if entry.get(k))
    if paper:
        details.append(f"- **Paper:** {paper}")
    if entry.get("origin_url"):
        details.append(f"- **Original code:** {entry['origin_url']}")
    details.append(f"- **License:** {entry['license']} (the license of the original weights)")
    return "\n".join(
        [
            "---",
            "tags:",
            "- image-classification",
            "- timm",
            "- zoo",
            "library_name: timm",
            f"license: {entry['license']}",
            "---",
            f"# {name}",
            "",
            f"`{name}` converted from the official release to timm's format (safetensors) by "
            "`zoo weights convert`. The tensors are those of the source file under the zoo's key names.",
            "",
            "## Model details",
            *details,
            "",
            "## Usage",
            "```python",
            "import timm",
            "import zoo  # registers the zoo architectures in timm",
            "",
            f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
            "config = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**config)",
            "# logits = model(transform(image).unsqueeze(0))",
            "```",
            "",
            f'The same weights load as `timm.create_model("{name}", pretrained=True)`.',
            "",
        ]
    )
