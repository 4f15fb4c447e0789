"""Components start from a user's existing weights (CLIP, BERT + GPT-2, SD-style VAE/UNet folders), offline."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, GPT2Config, GPT2LMHeadModel

from codixr.errors import ModelPackageError
from codixr.models.prompt_encoder import PromptEncoder
from codixr.models.text_vae import OptimusTextVAE
from codixr.pipeline import CoDiXRPipeline


def test_prompt_encoder_from_a_clip_folder(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2), projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    pe = PromptEncoder.from_clip(str(tmp_path / "clip"))
    # RGB patch embedding summed to one channel: a gray image gives CLIP's output for the same gray RGB image
    gray = torch.rand(1, 1, 32, 32)
    ours = pe.image_encoder(pixel_values=gray * 2 - 1).image_embeds
    theirs = clip.get_image_features(pixel_values=(gray * 2 - 1).expand(-1, 3, -1, -1))
    theirs = theirs if torch.is_tensor(theirs) else theirs.pooler_output
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(pe.text_encoder.text_model.embeddings.token_embedding.weight,
                       clip.text_model.embeddings.token_embedding.weight)


def test_text_vae_from_bert_and_gpt2_folders(tmp_path):
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64), add_pooling_layer=False).save_pretrained(tmp_path / "bert")
    GPT2LMHeadModel(GPT2Config(vocab_size=120, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    vae = OptimusTextVAE.from_pretrained_parts(str(tmp_path / "bert"), str(tmp_path / "gpt2"), latent_dim=8)
    bert = BertModel.from_pretrained(tmp_path / "bert", add_pooling_layer=False)
    gpt2 = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    assert torch.equal(vae.encoder.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert torch.equal(vae.decoder.transformer.h[0].attn.c_attn.weight, gpt2.transformer.h[0].attn.c_attn.weight)
    ids = torch.tensor([[2, 5, 7, 3]])
    out = vae(ids, torch.ones_like(ids))
    assert torch.isfinite(out.loss)


def test_vae_from_an_rgb_sd_style_folder(tmp_path):
    from training.stage2_vae import vae_from

    torch.manual_seed(0)
    blocks = dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4, latent_channels=4)
    AutoencoderKL(in_channels=3, out_channels=3, **blocks).save_pretrained(tmp_path / "sd" / "vae")
    vae = vae_from(str(tmp_path / "sd"), dict(in_channels=1, out_channels=1, **blocks))
    rgb = AutoencoderKL.from_pretrained(tmp_path / "sd" / "vae")
    gray = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        ours = vae.encode(gray).latent_dist.mean
        theirs = rgb.encode(gray.expand(-1, 3, -1, -1)).latent_dist.mean
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_unet_from_an_sd_style_folder_matches_the_paper_layout(tmp_path):
    from codixr.models.configs import get_config

    cfg = get_config("paper")["unet"]
    # the paper configuration is SD-1.5's UNet: its config keys load into ours unchanged
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    assert unet.config.cross_attention_dim == 768 and unet.config.in_channels == 4
    assert tuple(unet.config.block_out_channels) == (320, 640, 1280, 1280)


def test_hub_id_offline_and_missing_folder_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelPackageError, match="HF_HUB_OFFLINE"):
        CoDiXRPipeline.from_pretrained("someone/codixr-not-cached")
    with pytest.raises(ModelPackageError, match="not found"):
        CoDiXRPipeline.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPackageError, match="model_index.json"):
        CoDiXRPipeline.from_pretrained(tmp_path / "empty")
