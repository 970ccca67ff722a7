"""torch.hub entry points: `torch.hub.load(REPO_DIR, "promptiqa", checkpoint=..., prompts=..., source="local")`."""
dependencies = ["torch", "timm", "einops", "cv2", "numpy"]

from PromptIQA.scoring.metric import create_metric


def promptiqa(**kwargs):
    """The PromptIQA metric module; keyword arguments as PromptIQA.create_metric."""
    return create_metric(**kwargs)
