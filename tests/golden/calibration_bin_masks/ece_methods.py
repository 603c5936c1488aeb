def ece_methods(logits, labels, lowers, uppers):
    softmaxes = F.softmax(logits, dim=1)
    confidences, predictions = torch.max(softmaxes, 1)
    accuracies = predictions.eq(labels)
    ece = torch.zeros(1, dtype=logits.dtype)
    _lowers_stacked = _stack_items(tuple(lowers)) if (type(lowers) is list or (isinstance(lowers, tuple) and type(lowers).__getitem__ is tuple.__getitem__ and (type(lowers).__iter__ is tuple.__iter__) and (type(lowers).__len__ is tuple.__len__))) and len(lowers) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == lowers[0].shape and (_v.dtype == lowers[0].dtype) and (_v.device == lowers[0].device) for _v in lowers)) else lowers
    _uppers_stacked = _stack_items(tuple(uppers)) if (type(uppers) is list or (isinstance(uppers, tuple) and type(uppers).__getitem__ is tuple.__getitem__ and (type(uppers).__iter__ is tuple.__iter__) and (type(uppers).__len__ is tuple.__len__))) and len(uppers) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == uppers[0].shape and (_v_1.dtype == uppers[0].dtype) and (_v_1.device == uppers[0].device) for _v_1 in uppers)) else uppers
    if isinstance(accuracies, torch.Tensor) and isinstance(confidences, torch.Tensor) and isinstance(_lowers_stacked, torch.Tensor) and (_lowers_stacked.dim() > 0) and isinstance(_uppers_stacked, torch.Tensor) and (_uppers_stacked.dim() > 0) and isinstance(min(len(_lowers_stacked), len(_uppers_stacked)), int) and (min(len(_lowers_stacked), len(_uppers_stacked)) > 0) and (not _rounds_gradients(confidences, accuracies)):
        'optimize_loss: loop at line 6 vectorized'

        def _body(bin_lower, bin_upper):
            _ece_part = _identity_of(ece, 0)
            in_bin = confidences.gt(bin_lower.detach()) * confidences.le(bin_upper.detach())
            prop_in_bin = in_bin.float().mean()
            _cond = torch.ne(prop_in_bin.detach().double() > 0, False)
            _keep = (_detached_operand(_cond, confidences).gt(torch.where(_cond.reshape(_branch_shape[_cond.shape, bin_lower.shape]), bin_lower, bin_lower.detach()).detach()) * _detached_operand(_cond, confidences).le(torch.where(_cond.reshape(_branch_shape[_cond.shape, bin_upper.shape]), bin_upper, bin_upper.detach()).detach())).reshape(_mask_shape[in_bin.shape, accuracies.shape])
            _vals = torch.where(_keep, _fixed_operand(_cond, accuracies), False).float()
            accuracy_in_bin = torch.where(_keep, _vals, 0).sum().mean() / torch.where(_cond, _keep.expand_as(_vals).sum(), 1)
            _keep_1 = (_detached_operand(_cond, confidences).gt(torch.where(_cond.reshape(_branch_shape[_cond.shape, bin_lower.shape]), bin_lower, bin_lower.detach()).detach()) * _detached_operand(_cond, confidences).le(torch.where(_cond.reshape(_branch_shape[_cond.shape, bin_upper.shape]), bin_upper, bin_upper.detach()).detach())).reshape(_mask_shape[in_bin.shape, confidences.shape])
            _vals_1 = torch.where(_keep_1, _fixed_operand(_cond, confidences), False)
            avg_confidence_in_bin = torch.where(_keep_1, _vals_1, 0).sum().mean() / torch.where(_cond, _keep_1.expand_as(_vals_1).sum(), 1)
            _ece_part = _ece_part + torch.where(_cond, torch.abs(avg_confidence_in_bin - accuracy_in_bin) * torch.where(_cond.reshape(_branch_shape[_cond.shape, prop_in_bin.shape]), prop_in_bin, False), 0)
            return (torch.as_tensor(_ece_part), torch.as_tensor(_cond))
        _outs = _map_in_chunks(_body, in_dims=(0, 0))(_lowers_stacked if len(_lowers_stacked) == min(len(_lowers_stacked), len(_uppers_stacked)) else _lowers_stacked[:min(len(_lowers_stacked), len(_uppers_stacked))], _uppers_stacked if len(_uppers_stacked) == min(len(_lowers_stacked), len(_uppers_stacked)) else _uppers_stacked[:min(len(_lowers_stacked), len(_uppers_stacked))])
        _outs = (_outs[0].sum(0), _outs[1])
        if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(ece, _outs[0]) != _outs[0].dtype or (isinstance(ece, torch.Tensor) and ece.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(ece, _outs[0], 0):
            "optimize_loss: as written, the loop at line 6: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
            for bin_lower, bin_upper in zip(lowers, uppers):
                in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
                prop_in_bin = in_bin.float().mean()
                if prop_in_bin.item() > 0:
                    accuracy_in_bin = accuracies[in_bin].float().mean()
                    avg_confidence_in_bin = confidences[in_bin].mean()
                    ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
        elif isinstance(ece, torch.Tensor) or _outs[1].any():
            ece += _outs[0]
    else:
        for bin_lower, bin_upper in zip(lowers, uppers):
            in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
            prop_in_bin = in_bin.float().mean()
            if prop_in_bin.item() > 0:
                accuracy_in_bin = accuracies[in_bin].float().mean()
                avg_confidence_in_bin = confidences[in_bin].mean()
                ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
    return ece