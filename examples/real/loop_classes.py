"""Every loop of the real-code corpus, classified by what its iterations do, with why.

The goal on real code is stated over the loops whose iterations are independent: at least 85% of
them should run vectorized. ``INDEPENDENT`` loops are that denominator; the other classes say why a
loop is outside it. Keys are ``"real.<module>:<line>"`` as ``tests.corpus_run_counts`` prints them (a
loop whose line moves shows up there as unclassified); ``loop_class`` looks one up. LossBench's
per-loop table (``python -m rewrite bench examples/real --per-loop``) reads them from here.

- ``INDEPENDENT``: no iteration reads what another wrote, and every iteration does tensor work
  of one shape (or of per-item sizes that pad to one shape: masked selections, ragged lengths).
- ``HETEROGENEOUS``: independent, but the items differ in shape or kind (pyramid levels, scales
  of an image, feature maps of different layers, named losses that call different functions):
  one batched op would need padding the original never does, and each item is already one op.
- ``BOOKKEEPING``: no tensor work per item (names, dicts, Python numbers, module construction).
- ``HOST``: each iteration runs host code the loop exists for (Hungarian matching in scipy,
  numpy triplet selection).
- ``DEPENDENT``: an iteration reads what an earlier one wrote (recurrences, ``break``,
  overwrites at data-dependent slots where the last writer wins).
"""
from __future__ import annotations

INDEPENDENT, HETEROGENEOUS, BOOKKEEPING, HOST, DEPENDENT = (
    "independent", "heterogeneous", "bookkeeping", "host", "dependent")

LOOP_CLASSES: dict[str, tuple[str, str]] = {
    "real.con_cpc_infonce_steps:57": (BOOKKEEPING, "parameter-name dict for functional_call"),
    "real.con_cpc_infonce_steps:28": (BOOKKEEPING, "builds an nn.ModuleList in __init__"),
    "real.con_cpc_infonce_steps:37": (INDEPENDENT, "encode_samples[i-1] = z[:, t+i]: one row each"),
    "real.con_cpc_infonce_steps:41": (INDEPENDENT, "pred[i] = Wk[i](c_t): one linear per step"),
    "real.con_cpc_infonce_steps:44": (INDEPENDENT, "per-step InfoNCE summed; last `correct` read"),
    "real.con_info_nce_views:29": (INDEPENDENT, "one arange per view, concatenated"),
    "real.con_ntxent_mask_loop:36": (INDEPENDENT, "mask[i, n+i] = 0: distinct slots"),
    "real.depth_monodepth_photometric:94": (INDEPENDENT, "per source frame, one scale's shape"),
    "real.depth_monodepth_photometric:101": (INDEPENDENT, "per source frame, one scale's shape"),
    "real.depth_monodepth_photometric:85": (HETEROGENEOUS, "per scale: images of 4 sizes"),
    "real.depth_multiscale_grad:35": (HETEROGENEOUS, "per scale: strided views of 4 sizes"),
    "real.det_detr_set_criterion:161": (BOOKKEEPING, "weight_dict.update with suffixed names"),
    "real.det_detr_set_criterion:166": (BOOKKEEPING, "named scalar losses times named weights"),
    "real.det_detr_set_criterion:159": (BOOKKEEPING, "list of dicts of aux outputs"),
    "real.det_detr_set_criterion:162": (BOOKKEEPING, "dict comprehension of names"),
    "real.det_detr_set_criterion:135": (BOOKKEEPING, "sum of len() over a list of dicts"),
    "real.det_detr_set_criterion:140": (HETEROGENEOUS, "per loss name a different loss function"),
    "real.det_detr_set_criterion:146": (HETEROGENEOUS, "per loss name a different loss function"),
    "real.det_detr_set_criterion:144": (HOST, "per decoder layer a scipy Hungarian matching"),
    "real.det_detr_set_criterion:132": (BOOKKEEPING, "dict comprehension dropping a key"),
    "real.det_detr_set_criterion:151": (BOOKKEEPING, "dict comprehension renaming keys"),
    "real.det_detr_set_criterion:100": (HETEROGENEOUS, "cat of per-image matches (ragged)"),
    "real.det_detr_set_criterion:68": (HETEROGENEOUS, "top-k accuracy: the first k rows per k"),
    "real.det_detr_set_criterion:122": (HETEROGENEOUS, "cat of per-image matches (ragged)"),
    "real.det_detr_set_criterion:123": (HETEROGENEOUS, "cat of per-image matches (ragged)"),
    "real.det_detr_set_criterion:113": (HETEROGENEOUS, "cat of per-image matches (ragged)"),
    "real.det_mmdet_multi_apply:152": (INDEPENDENT, "positives per image, summed"),
    "real.det_mmdet_multi_apply:151": (BOOKKEEPING, "Python ints from level shapes"),
    "real.det_mmdet_multi_apply:38": (DEPENDENT, "start = end: running offsets of levels"),
    "real.det_mmdet_multi_apply:169": (HETEROGENEOUS, "per-level losses of different shapes"),
    "real.det_mmdet_multi_apply:165": (BOOKKEEPING, "dict of named losses"),
    "real.det_mmdet_multi_apply:172": (BOOKKEEPING, "dict of named losses filtered by name"),
    "real.det_retinanet_focal:50": (INDEPENDENT, "per image, annotations padded with -1"),
    "real.det_ssd_multibox:104": (INDEPENDENT, "match() writes image idx's own rows"),
    "real.det_ssd_multibox:64": (DEPENDENT, "writes at data-dependent slots, last wins"),
    "real.det_yolo_levels:153": (BOOKKEEPING, "namespaces of anchors and strides"),
    "real.det_yolo_levels:123": (HETEROGENEOUS, "per pyramid level: grids of 3 sizes"),
    "real.det_yolo_levels:82": (HETEROGENEOUS, "per pyramid level: grids of 3 sizes"),
    "real.kd_attention_transfer:39": (HETEROGENEOUS, "per layer: feature maps of 3 sizes"),
    "real.kd_attention_transfer:40": (HETEROGENEOUS, "per layer losses (0-d), list rebound"),
    "real.kd_overhaul_margin:35": (BOOKKEEPING, "setattr of margins in __init__"),
    "real.kd_overhaul_margin:42": (HETEROGENEOUS, "per layer: feature maps of 3 sizes"),
    "real.kd_similarity_preserving:29": (HETEROGENEOUS, "per layer: feature maps of 3 sizes"),
    "real.metric_lifted_hard_mining:34": (INDEPENDENT, "per anchor masked selections, continue"),
    "real.metric_multi_similarity:39": (INDEPENDENT, "per anchor builtin min/max mining, continue"),
    "real.metric_lifted_pairs:33": (INDEPENDENT, "per pair masked sums, summed"),
    "real.metric_lifted_pairs:30": (INDEPENDENT, "per anchor, its inner pair loop"),
    "real.metric_npair_sampled:46": (INDEPENDENT, "per n-pair unit-slice distances, stacked"),
    "real.metric_npair_sampled:48": (INDEPENDENT, "per n-pair weight sums, stacked"),
    "real.metric_online_triplet_mining:60": (HOST, "numpy triplet selection per label"),
    "real.metric_online_triplet_mining:51": (HOST, "numpy triplet selection per label"),
    "real.metric_proxy_nca_lists:32": (INDEPENDENT, "one proxy row per label, stacked"),
    "real.metric_proxy_nca_lists:33": (INDEPENDENT, "all classes but the label, stacked"),
    "real.metric_proxy_nca_lists:35": (INDEPENDENT, "negative proxies per label, stacked"),
    "real.nlp_chatbot_mask_nll_steps:37": (INDEPENDENT, "per time step masked NLL, summed"),
    "real.nlp_seq2seq_step_nll:37": (INDEPENDENT, "per step NLL into an accumulator"),
    "real.nlp_tagging_nested_loops:33": (INDEPENDENT, "per token"),
    "real.nlp_tagging_nested_loops:32": (INDEPENDENT, "per sentence"),
    "real.pc_chamfer_nn_loop:35": (INDEPENDENT, "per cloud nearest neighbours"),
    "real.pc_sinkhorn_emd:47": (DEPENDENT, "Sinkhorn iterations with a break"),
    "real.pose_joints_mse:33": (INDEPENDENT, "per joint"),
    "real.pose_ohkm_mse:47": (INDEPENDENT, "per joint"),
    "real.pose_ohkm_mse:56": (INDEPENDENT, "per sample mean, list rebound"),
    "real.pose_ohkm_mse:32": (INDEPENDENT, "per sample top-k"),
    "real.reid_center_loss:42": (INDEPENDENT, "per sample masked distances"),
    "real.reid_hard_mine_triplet:39": (INDEPENDENT, "per anchor hardest pair"),
    "real.reid_oim_lookup_table:39": (DEPENDENT, "lut[y] updated in order, labels repeat"),
    "real.reid_pcb_part_ce:28": (BOOKKEEPING, "part[i] = outputs[i]: copies into a dict"),
    "real.reid_pcb_part_ce:35": (INDEPENDENT, "per part cross entropy, summed"),
    "real.rl_a2c_gae_storage:40": (DEPENDENT, "returns recurrence backwards in time"),
    "real.rl_a2c_gae_storage:48": (DEPENDENT, "GAE recurrence backwards in time"),
    "real.rl_a2c_gae_storage:56": (DEPENDENT, "returns recurrence backwards in time"),
    "real.rl_a2c_gae_storage:63": (DEPENDENT, "returns recurrence backwards in time"),
    "real.rl_gae_advantages:28": (DEPENDENT, "GAE recurrence backwards in time"),
    "real.rl_gae_list_ppo:28": (DEPENDENT, "GAE recurrence backwards in time"),
    "real.rl_ppo_mc_returns:33": (DEPENDENT, "discounted return with resets"),
    "real.rl_reinforce_returns:29": (DEPENDENT, "R = r + gamma * R"),
    "real.rl_reinforce_returns:34": (INDEPENDENT, "per step -log_prob * R"),
    "real.seg_dice_ignore_index:72": (INDEPENDENT, "per class Dice, ignore_index skipped"),
    "real.seg_focal_per_class:84": (INDEPENDENT, "per class focal term"),
    "real.seg_lovasz_hinge_per_image:77": (INDEPENDENT, "per image sort and Lovász gradient"),
    "real.seg_lovasz_hinge_per_image:68": (INDEPENDENT, "running mean of per-image losses"),
    "real.seg_lovasz_softmax_present:80": (INDEPENDENT, "per image sort and Lovász gradient"),
    "real.seg_lovasz_softmax_present:54": (INDEPENDENT, "per class, absent classes skipped"),
    "real.seg_lovasz_softmax_present:40": (INDEPENDENT, "running mean of per-image losses"),
    "real.seg_nnunet_deep_supervision:152": (BOOKKEEPING, "numpy weights from Python numbers"),
    "real.seg_nnunet_deep_supervision:153": (BOOKKEEPING, "numpy mask from Python numbers"),
    "real.seg_nnunet_deep_supervision:46": (BOOKKEEPING, "compares shape entries"),
    "real.seg_nnunet_deep_supervision:29": (DEPENDENT, "inp = inp.sum(ax): reduces in turn"),
    "real.seg_nnunet_deep_supervision:32": (DEPENDENT, "inp = inp.sum(ax): reduces in turn"),
    "real.seg_nnunet_deep_supervision:144": (HETEROGENEOUS, "per resolution: outputs of 3 sizes"),
    "real.sep_pit_sisnr_perms:41": (INDEPENDENT, "per speaker of one permutation, summed"),
    "real.sep_pit_sisnr_perms:44": (INDEPENDENT, "per permutation, stacked"),
    "real.sep_sisnr_pit_mask:28": (INDEPENDENT, "per utterance"),
    "real.spk_aam_softmax_excl:46": (BOOKKEEPING, "normalises the one weight of a layer"),
    "real.spk_aam_softmax_excl:60": (INDEPENDENT, "per row all logits but the label's"),
    "real.spk_ge2e_contrast:44": (INDEPENDENT, "per utterance, centroids without itself"),
    "real.spk_ge2e_contrast:42": (INDEPENDENT, "per speaker, its inner utterance loop"),
    "real.spk_ge2e_contrast:33": (INDEPENDENT, "per centroid, one replaced"),
    "real.spk_ge2e_contrast:57": (INDEPENDENT, "per utterance, all sigmoids but one"),
    "real.spk_ge2e_contrast:55": (INDEPENDENT, "per speaker, its inner utterance loop"),
    "real.spk_ge2e_exclusive_centroids:38": (INDEPENDENT, "per utterance, centroid without it"),
    "real.spk_ge2e_nested_loops:23": (INDEPENDENT, "per utterance"),
    "real.spk_ge2e_nested_loops:21": (INDEPENDENT, "per speaker"),
    "real.spk_ge2e_nested_loops:44": (INDEPENDENT, "per centroid, own speaker's recomputed"),
    "real.spk_ge2e_nested_loops:43": (INDEPENDENT, "per utterance, its centroid loop"),
    "real.spk_ge2e_nested_loops:42": (INDEPENDENT, "per speaker, its utterance loop"),
    "real.spk_ge2e_nested_loops:32": (INDEPENDENT, "per utterance"),
    "real.spk_ge2e_nested_loops:55": (INDEPENDENT, "per utterance"),
    "real.spk_ge2e_nested_loops:54": (INDEPENDENT, "per speaker"),
}


def loop_class(module: str, line: int) -> tuple[str, str]:
    """The class of the loop at ``line`` of ``examples/real/<module>.py`` and why; "unclassified"
    when the corpus does not list it."""
    return LOOP_CLASSES.get(f"real.{module}:{line}", ("unclassified", ""))
