"""The names of ComfyUI's own nodes (nodes.py and comfy_extras/, late 2025), so that an error can tell them apart.

A prompt that names a node Atelier does not have is refused with `missing_node_type` (validation.py). The sentence
differs by where the node comes from: one of ComfyUI's own nodes is one Atelier does not have *yet* (there is
hope, and a workflow saved with plain ComfyUI needs nothing else); any other name belongs to a custom node pack,
which Atelier cannot install. The list is names only, collected by reading ComfyUI's node mappings; it needs no
update to stay correct for the nodes Atelier runs, since those are found in the registry first.
"""

from __future__ import annotations

_NAMES = """
    KSampler KSamplerAdvanced CheckpointLoaderSimple CheckpointLoader DiffusersLoader unCLIPCheckpointLoader
    ImageOnlyCheckpointLoader CLIPLoader DualCLIPLoader TripleCLIPLoader QuadrupleCLIPLoader UNETLoader VAELoader
    LoraLoader LoraLoaderModelOnly HypernetworkLoader UpscaleModelLoader ControlNetLoader DiffControlNetLoader
    StyleModelLoader CLIPVisionLoader GLIGENLoader PhotoMakerLoader
    CLIPTextEncode CLIPSetLastLayer CLIPTextEncodeSDXL CLIPTextEncodeSDXLRefiner CLIPTextEncodeSD3
    CLIPTextEncodeFlux CLIPTextEncodeHunyuanDiT CLIPTextEncodeLumina2 CLIPTextEncodeHiDream CLIPTextEncodePixArtAlpha
    CLIPTextEncodeControlnet CLIPVisionEncode StyleModelApply unCLIPConditioning GLIGENTextBoxApply PhotoMakerEncode
    ConditioningAverage ConditioningCombine ConditioningConcat ConditioningSetArea ConditioningSetAreaPercentage
    ConditioningSetAreaStrength ConditioningSetMask ConditioningZeroOut ConditioningSetTimestepRange
    ConditioningStableAudio InpaintModelConditioning InstructPixToPixConditioning FluxGuidance FluxDisableGuidance
    FluxKontextImageScale ReferenceLatent ControlNetApply ControlNetApplyAdvanced ControlNetApplySD3
    SetUnionControlNetType ControlNetInpaintingAliMamaApply
    EmptyLatentImage EmptySD3LatentImage EmptyHunyuanLatentVideo EmptyLTXVLatentVideo EmptyMochiLatentVideo
    EmptyCosmosLatentVideo EmptyLatentAudio StableCascade_EmptyLatentImage LatentUpscale LatentUpscaleBy
    LatentFromBatch RepeatLatentBatch LatentComposite LatentCompositeMasked LatentBlend LatentRotate LatentFlip
    LatentCrop LatentAdd LatentSubtract LatentMultiply LatentInterpolate LatentBatch LatentBatchSeedBehavior
    RebatchLatents SetLatentNoiseMask LoadLatent SaveLatent
    VAEDecode VAEEncode VAEEncodeForInpaint VAEDecodeTiled VAEEncodeTiled VAEDecodeAudio VAEEncodeAudio
    SaveImage PreviewImage SaveImageWebsocket LoadImage LoadImageMask LoadImageOutput EmptyImage ImageScale
    ImageScaleBy ImageScaleToTotalPixels ImageScaleToMaxDimension ImageInvert ImageBatch ImagePadForOutpaint
    ImageUpscaleWithModel ImageBlend ImageBlur ImageQuantize ImageSharpen ImageCompositeMasked ImageCrop
    RepeatImageBatch ImageFromBatch ImageAddNoise ImageStitch ImageFlip ImageRotate ResizeAndPadImage RebatchImages
    PorterDuffImageComposite SplitImageWithAlpha JoinImageWithAlpha Canny Morphology ImageRGBToYUV ImageYUVToRGB
    SaveAnimatedWEBP SaveAnimatedPNG WebcamCapture
    MaskToImage ImageToMask ImageColorToMask SolidMask InvertMask CropMask MaskComposite FeatherMask GrowMask
    ThresholdMask
    SamplerCustom SamplerCustomAdvanced KSamplerSelect BasicScheduler KarrasScheduler ExponentialScheduler
    PolyexponentialScheduler LaplaceScheduler VPScheduler BetaSamplingScheduler SDTurboScheduler GITSScheduler
    AlignYourStepsScheduler LTXVScheduler SplitSigmas SplitSigmasDenoise FlipSigmas SetFirstSigma
    ExtendIntermediateSigmas SamplerEulerAncestral SamplerEulerAncestralCFGPP SamplerLMS SamplerDPMPP_3M_SDE
    SamplerDPMPP_2M_SDE SamplerDPMPP_SDE SamplerDPMPP_2S_Ancestral SamplerDPMAdaptative SamplerLCMUpscale
    SamplerER_SDE SamplerSASolver CFGGuider DualCFGGuider BasicGuider PerpNegGuider RandomNoise DisableNoise AddNoise
    ModelSamplingDiscrete ModelSamplingContinuousEDM ModelSamplingContinuousV ModelSamplingStableCascade
    ModelSamplingSD3 ModelSamplingAuraFlow ModelSamplingFlux ModelSamplingLTXV RescaleCFG PerpNeg
    SelfAttentionGuidance SkipLayerGuidanceSD3 SkipLayerGuidanceDiT CFGZeroStar CFGNorm APG TCFG FreeU FreeU_V2
    PatchModelAddDownscale HyperTile TomePatchModel DifferentialDiffusion CLIPAttentionMultiply
    UNetSelfAttentionMultiply UNetCrossAttentionMultiply UNetTemporalAttentionMultiply TorchCompileModel
    ModelMergeSimple ModelMergeBlocks ModelMergeSubtract ModelMergeAdd ModelMergeSD1 ModelMergeSD2 ModelMergeSDXL
    ModelMergeSD3_2B ModelMergeFlux1 ModelMergeAuraflow CLIPMergeSimple CLIPMergeSubtract CLIPMergeAdd
    CheckpointSave ImageOnlyCheckpointSave CLIPSave VAESave ModelSave LoraSave
    SVD_img2vid_Conditioning VideoLinearCFGGuidance VideoTriangleCFGGuidance StableZero123_Conditioning
    StableZero123_Conditioning_Batched SV3D_Conditioning SD_4XUpscale_Conditioning StableCascade_StageB_Conditioning
    StableCascade_StageC_VAEEncode StableCascade_SuperResolutionControlnet LTXVImgToVideo LTXVConditioning
    LTXVAddGuide LTXVPreprocess LTXVCropGuides WanImageToVideo WanFunControlToVideo WanVaceToVideo
    CosmosImageToVideoLatent TextEncodeHunyuanVideo_ImageToVideo SaveWEBM SaveVideo LoadVideo CreateVideo
    GetVideoComponents SaveAudio LoadAudio PreviewAudio
    PrimitiveString PrimitiveStringMultiline PrimitiveInt PrimitiveFloat PrimitiveBoolean PreviewAny
    StringConcatenate StringSubstring StringLength StringReplace StringTrim StringContains StringCompare RegexMatch
    RegexExtract RegexReplace
"""
COMFYUI_CORE_NODES: frozenset[str] = frozenset(_NAMES.split())


def is_comfyui_core(class_type: str) -> bool:
    """Whether `class_type` names one of ComfyUI's own nodes (as opposed to a custom node pack's)."""
    return class_type.strip() in COMFYUI_CORE_NODES  # ComfyUI itself registers "ConditioningAverage " with a space
