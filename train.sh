#!/usr/bin/env bash
# The published training recipe: 44 images per step over 4 GPUs (11 per GPU, so 10 prompts per
# query), 50 epochs, seed 2024. Edit the two lists below, then: sh train.sh
set -euo pipefail

GPUS=0,1,2,3
DATASETS="spaq csiq livec koniq10k kadid live"

CUDA_VISIBLE_DEVICES=$GPUS python train.py \
    --dist-url tcp://127.0.0.1:12754 \
    --dist-backend nccl \
    --multiprocessing-distributed \
    --world-size 1 \
    --rank 0 \
    --dataset $DATASETS \
    --batch_size 44 \
    --epochs 50 \
    --seed 2024 \
    --lr 1e-5 \
    --weight_decay 1e-5 \
    --random_flipping_rate 0.1 \
    --random_scale_rate 0.5 \
    --pretrained imagenet \
    --save_path ./runs/promptiqa \
    --resume auto

# Several nodes with torchrun (run on every node; NODE_RANK = 0 .. NNODES-1, MASTER = node 0's address):
# torchrun --nnodes $NNODES --node-rank $NODE_RANK --nproc-per-node 4 \
#     --rdzv-backend c10d --rdzv-endpoint $MASTER:29500 \
#     train.py --dataset $DATASETS --batch_size 88 --epochs 50 --seed 2024 --save_path ./runs/promptiqa --resume auto
