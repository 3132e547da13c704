# UperNet 160k on ADE20K (512x512) with zoo_slak_tiny.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: VITA-Group/SLaK `segmentation/configs/upernet_slak_tiny_512_160k_ade20k_ss.py` (AdamW lr 1e-4, weight
# decay 0.05, stage-wise lr decay 0.9 over 6 layers, drop path 0.4, SyncBN, 16 images a step): 47.6 mIoU. The
# official fine-tuning keeps the zeros of the sparse pretrained kernels (`sparse=True`); here they are fine-tuned
# dense.
_base_ = "./_base_/upernet_zoo-convnext_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_slak_tiny", drop_path_rate=0.4, norm_cfg=dict(type="SyncBN")),
    decode_head=dict(in_channels=[124, 249, 499, 998]),
    auxiliary_head=dict(in_channels=499),
)
